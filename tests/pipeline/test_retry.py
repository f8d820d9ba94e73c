"""The one retry helper: back-off, give-up rules and the stop event."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.retry import Stopped, retrying


class Flaky(Exception):
    pass


async def run(fails: int, **options: object) -> tuple[int, list[tuple[int, float]]]:
    """Call an operation that fails ``fails`` times; return (calls, [(attempt, wait)])."""
    calls = 0
    waits: list[tuple[int, float]] = []

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls <= fails:
            raise Flaky(f"failure {calls}")
        return "ok"

    async for attempt in retrying(
        lambda exc: isinstance(exc, Flaky),
        on_retry=lambda exc, n, wait: waits.append((n, wait)),
        **options,  # type: ignore[arg-type]
    ):
        with attempt:
            assert await operation() == "ok"
    return calls, waits


async def test_waits_double_up_to_the_cap() -> None:
    calls, waits = await run(5, first_s=0.001, max_s=0.004)
    assert calls == 6
    assert waits == [(1, 0.001), (2, 0.002), (3, 0.004), (4, 0.004), (5, 0.004)]


async def test_gives_up_after_max_attempts_with_the_last_failure() -> None:
    with pytest.raises(Flaky, match="failure 3"):
        await run(10, first_s=0.001, max_s=0.001, max_attempts=3)


async def test_other_failures_are_raised_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("not retryable")

    with pytest.raises(KeyError):
        async for attempt in retrying(lambda exc: isinstance(exc, Flaky), first_s=1, max_s=1):
            with attempt:
                await broken()
    assert calls == 1


async def test_a_stop_during_the_wait_ends_the_retries() -> None:
    stop = asyncio.Event()
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        stop.set()  # the stop arrives while the operation fails: the hour-long wait is cut
        raise Flaky("down")

    with pytest.raises(Stopped):
        async for attempt in retrying(
            lambda exc: isinstance(exc, Flaky), first_s=3600, max_s=3600, stop=stop
        ):
            with attempt:
                await failing()
    assert calls == 1


async def test_give_up_after_zero_seconds_means_one_try() -> None:
    with pytest.raises(Flaky, match="failure 1"):
        await run(10, first_s=0.5, max_s=1, give_up_after_s=0)
