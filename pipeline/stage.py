"""What every consuming stage shares: the poll–handle–commit loop and dead-lettering.

A stage is a plain object with ``async handle(batch)``. :func:`consume` reads a batch,
awaits the handler (which produces its outputs and waits for their acknowledgement), then
commits. A stop request (SIGTERM) lets the batch in hand finish and be committed before
the loop returns, so nothing is lost and nothing is processed twice by a clean restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pipeline.bus.base import Bus, Message
from pipeline.events import DeadLetter, SchemaError, _Event, decode, encode

log = logging.getLogger(__name__)
E = TypeVar("E", bound=_Event)


class BatchHandler(Protocol):
    async def handle(self, batch: Sequence[Message]) -> None: ...


async def consume(
    bus: Bus,
    topics: Sequence[str],
    group_id: str,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    max_records: int = 256,
    poll_ms: int = 200,
    started: asyncio.Event | None = None,
) -> None:
    """Run ``handler`` over ``topics`` as a member of ``group_id`` until ``stop`` is set."""
    consumer = bus.consumer(topics, group_id)
    await consumer.start()
    if started is not None:
        started.set()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(poll_ms, max_records)
            if not batch:
                continue
            await handler.handle(batch)
            await consumer.commit(batch)
    finally:
        await consumer.stop()


async def dead_letter(bus: Bus, topic: str, message: Message, reason: str, detail: str) -> None:
    """Keep ``message`` in the dead-letter topic with why it could not be processed."""
    record = DeadLetter(
        source_topic=message.topic,
        source_key=message.key.decode(errors="replace") if message.key else None,
        partition=message.partition,
        offset=message.offset,
        reason=reason,
        detail=detail,
        payload=message.value[:65536],
    )
    log.warning(
        "dead-lettered a message from %s (partition %s offset %s): %s: %s",
        message.topic,
        message.partition,
        message.offset,
        reason,
        detail,
    )
    await bus.produce(topic, encode(record), key=record.key.encode())


async def decode_or_dead_letter(
    bus: Bus, dead_letter_topic: str, message: Message, model: type[E]
) -> E | None:
    """Decode ``message`` as ``model``; dead-letter it and return None if it is not one."""
    try:
        return decode(message.value, model)
    except SchemaError as exc:
        await dead_letter(bus, dead_letter_topic, message, "malformed_event", str(exc))
        return None
