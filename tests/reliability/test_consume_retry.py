"""The consume loop outlives an unavailable bus: the batch is handled again, committed once
it went through, and left uncommitted when the role is stopped meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pipeline import stage as stage_module
from pipeline.bus.base import BusError, BusUnavailable, Message, Outgoing
from pipeline.bus.memory import MemoryBus
from pipeline.stage import consume

TOPIC = "retry.in"


class Flaky:
    """Fails ``failures`` times with ``error``, then handles; records every attempt.

    With ``stop`` it sets that event at attempt ``stop_at`` (a SIGTERM mid-outage).
    """

    def __init__(
        self,
        failures: int,
        error: Exception,
        stop: asyncio.Event | None = None,
        stop_at: int = 2,
    ) -> None:
        self.failures = failures
        self.error = error
        self.stop = stop
        self.stop_at = stop_at
        self.attempts: list[list[bytes]] = []

    async def handle(self, batch: Sequence[Message]) -> None:
        self.attempts.append([m.value for m in batch])
        if self.stop is not None and len(self.attempts) == self.stop_at:
            self.stop.set()
        if len(self.attempts) <= self.failures:
            raise self.error


async def uncommitted(bus: MemoryBus, group: str) -> list[bytes]:
    consumer = bus.consumer([TOPIC], group)
    await consumer.start()
    try:
        return [m.value for m in await consumer.getmany(100, 100)]
    finally:
        await consumer.stop()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_module, "RETRY_FIRST_S", 0.01)


@pytest.mark.parametrize("max_inflight", [1, 4], ids=["serial", "pipelined"])
async def test_unavailable_bus_is_waited_out_and_the_batch_committed_once(
    max_inflight: int,
) -> None:
    bus = MemoryBus()
    await bus.start()
    await bus.produce_many([Outgoing(TOPIC, b"%d" % i, b"k") for i in range(3)])
    stop = asyncio.Event()
    handler = Flaky(3, BusUnavailable("broker away"))

    async def stop_when_done() -> None:
        while len(handler.attempts) < 4:
            await asyncio.sleep(0.01)
        stop.set()

    await asyncio.gather(
        consume(bus, [TOPIC], "g", handler, stop, max_inflight=max_inflight), stop_when_done()
    )
    assert len(handler.attempts) == 4  # three failures, then through
    assert handler.attempts[0] == handler.attempts[-1] == [b"0", b"1", b"2"]
    assert await uncommitted(bus, "g") == []  # committed after the fourth attempt
    await bus.stop()


async def test_stop_while_the_bus_is_away_leaves_the_batch_uncommitted() -> None:
    bus = MemoryBus()
    await bus.start()
    await bus.produce_many([Outgoing(TOPIC, b"%d" % i, b"k") for i in range(3)])
    stop = asyncio.Event()
    handler = Flaky(100, BusUnavailable("broker away"), stop)
    await asyncio.wait_for(consume(bus, [TOPIC], "g", handler, stop), 10)
    assert await uncommitted(bus, "g") == [b"0", b"1", b"2"]  # the next consumer gets it
    await bus.stop()


async def test_a_refused_record_still_stops_the_loop() -> None:
    bus = MemoryBus()
    await bus.start()
    await bus.produce(TOPIC, b"x", b"k")
    handler = Flaky(1, BusError("record too large"))
    with pytest.raises(BusError, match="too large"):
        await asyncio.wait_for(consume(bus, [TOPIC], "g", handler, asyncio.Event()), 10)
    assert len(handler.attempts) == 1
    await bus.stop()


async def test_a_task_group_of_unavailable_errors_is_retried() -> None:
    group = ExceptionGroup("enforce", [BusUnavailable("a"), BusUnavailable("b")])
    assert stage_module.bus_unavailable(group)
    assert not stage_module.bus_unavailable(ExceptionGroup("x", [BusUnavailable("a"), OSError()]))
