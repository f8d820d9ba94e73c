"""Single-process reader of the output-only topics (``actions``, ``dead-letter``).

Nothing else reads ``actions`` (enforce already records them) or ``dead-letter`` in one
process, and an unread in-process queue would stop its producers once full. Dead letters
are kept in the state file's ``dead_letters`` table for the admin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from pipeline.bus.base import Bus, Message
from pipeline.events import DeadLetter, SchemaError, decode
from pipeline.settings import SharedConfig
from pipeline.stage import consume
from pipeline.state.sqlite import SqliteState
from pipeline.topics import ACTIONS, DEAD_LETTER


class LocalSink:
    """Batch handler that keeps dead letters in the state file and drops the rest."""

    def __init__(self, state: SqliteState, dead_letter_topic: str) -> None:
        self.state = state
        self.dead_letter_topic = dead_letter_topic

    async def handle(self, batch: Sequence[Message]) -> None:
        records = []
        for message in batch:
            if message.topic != self.dead_letter_topic:
                continue
            try:
                records.append((decode(message.value, DeadLetter), message.value.decode()))
            except SchemaError:
                continue
        if records:
            await self.state.record_dead_letters(records)


def sink_loop(
    settings: SharedConfig, bus: Bus, state: SqliteState, stop: asyncio.Event
) -> Coroutine[Any, Any, None]:
    """The consume loop of the local sink."""
    return consume(
        bus,
        [settings.topic(ACTIONS), settings.topic(DEAD_LETTER)],
        settings.group("local-sink"),
        LocalSink(state, settings.topic(DEAD_LETTER)),
        stop,
        max_records=1024,
    )
