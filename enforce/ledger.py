"""Enforce's verdict ledger as other processes see it (distributed mode).

Enforce records every verdict in its state file and, on Kafka, also writes the latest
verdict about each object to the compacted ``object-verdicts`` topic
(:class:`LedgerWriter`), so a process without that file (the ingest role, a cron
``pictguard reconcile``) can ask which objects were scanned (:class:`TopicLedger`). In one
process, :class:`enforce.records.Records` answers directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.bus.base import Bus
from pipeline.events import ObjectRef, Verdict
from pipeline.ledger import KnownVerdict
from pipeline.state.table import Table


class LedgerWriter:
    """Keeps the ``object-verdicts`` topic current: one entry per object, the latest verdict.

    It only produces; it never loads the topic (enforce answers from its own records).
    """

    def __init__(self, bus: Bus, topic: str) -> None:
        self.bus = bus
        self.topic = topic

    async def write(self, verdict: Verdict) -> None:
        """Publish ``verdict``'s entry and wait for the acknowledgement (no-op inline)."""
        if verdict.object is None:
            return  # an inline upload: nothing stored, nothing to reconcile
        await self.bus.produce(
            self.topic, KnownVerdict.of(verdict).to_bytes(), key=verdict.object.id.encode()
        )


class TopicLedger:
    """The ledger read from the ``object-verdicts`` table (a started :class:`Table`)."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        """The latest verdict per object id, for those of ``refs`` that have one."""
        found: dict[str, list[KnownVerdict]] = {}
        for ref in refs:
            value = await self.table.get(ref.id)
            if value:
                try:
                    found[ref.id] = [KnownVerdict.from_bytes(value)]
                except (ValueError, KeyError, TypeError):
                    continue  # unreadable entry: treat as no verdict, rescanning is safe
        return found
