"""Retrying with exponential back-off, on tenacity: the one way pictguard retries.

Every retry loop (a broker that is not up yet, a batch whose output the bus did not take,
an SQS poll that failed, an object body that broke off) goes through :func:`retrying`, so
the back-off, the give-up rule and the stop event behave the same everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    wait_exponential,
)
from tenacity.stop import stop_base

from pipeline.errors import PictguardError


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` comes first; True if it did.

    Not ``asyncio.wait_for(stop.wait(), …)``: on Python 3.11 that can swallow a
    cancellation arriving as the timeout fires, and a loop built on it never ends.
    """
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return stop.is_set()


class Stopped(PictguardError):
    """The stop event was set while waiting to try again; nothing more is tried."""


def retrying(
    retry_on: Callable[[BaseException], bool],
    *,
    first_s: float,
    max_s: float,
    stop: asyncio.Event | None = None,
    give_up_after_s: float | None = None,
    max_attempts: int | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> AsyncRetrying:
    """Attempts of an operation: ``async for attempt in retrying(...): with attempt: ...``.

    A failure that ``retry_on`` accepts is tried again after ``first_s``, doubling up to
    ``max_s``; any other failure is raised at once. After ``give_up_after_s`` (no next try
    would start before it) or ``max_attempts`` the last failure is raised. When ``stop`` is
    set during a wait, :class:`Stopped` is raised instead. ``on_retry(exc, attempt, wait)``
    is called before each wait, to log it.
    """
    give_up: stop_base = stop_never
    if give_up_after_s is not None:
        give_up = stop_before_delay(give_up_after_s)
    if max_attempts is not None:
        give_up = give_up | stop_after_attempt(max_attempts)

    async def wait(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
        elif await pause(stop, seconds):
            raise Stopped

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None or state.next_action is None:
            return
        exc = state.outcome.exception()
        if exc is not None:
            on_retry(exc, state.attempt_number, state.next_action.sleep)

    return AsyncRetrying(
        retry=retry_if_exception(retry_on),
        wait=wait_exponential(multiplier=first_s, max=max_s),
        stop=give_up,
        sleep=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
