"""Backfill: list a bucket/prefix or walk a folder and publish one scan request per object.

Listing is in key order on both stores, so the checkpoint is simply the last key whose scan
request the bus acknowledged; a crashed or interrupted backfill resumes after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ingest.filters import KeyFilter
from pipeline.bus.base import Bus, Outgoing
from pipeline.events import Lane, ScanRequest, Source, encode
from pipeline.settings import Settings
from pipeline.state.sqlite import SqliteState
from pipeline.storage.base import ObjectStore
from pipeline.storage.locations import Location
from pipeline.topics import SCAN_BULK
from pipeline.tracing import inject_headers, tracer

log = logging.getLogger(__name__)


@dataclass
class BackfillResult:
    listed: int = 0
    produced: int = 0
    filtered: int = 0
    resumed_after: str | None = None
    completed: bool = False


def checkpoint_name(location: Location) -> str:
    return f"backfill:{location}"


class Backfill:
    """Publishes scan requests for every admitted object under ``location``."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        store: ObjectStore,
        location: Location,
        state: SqliteState | None,
        *,
        on_produced: Callable[[int], None] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.store = store
        self.location = location
        self.state = state
        self.filter = KeyFilter.from_settings(settings.ingest)
        self.on_produced = on_produced
        self._topic = settings.topic(SCAN_BULK)

    async def run(self, stop: asyncio.Event | None = None, *, resume: bool = True) -> BackfillResult:
        result = BackfillResult()
        name = checkpoint_name(self.location)
        start_after = None
        if self.state is not None and resume:
            start_after = await self.state.get_checkpoint(name)
            if start_after:
                log.info("resuming backfill of %s after %s", self.location, start_after)
        result.resumed_after = start_after
        pending: list[Outgoing] = []
        last_key: str | None = None
        since_checkpoint = 0
        with tracer.start_as_current_span("ingest.backfill"):
            async for info in self.store.list(self.location.prefix, start_after=start_after):
                if stop is not None and stop.is_set():
                    break
                result.listed += 1
                last_key = info.key
                if not self.filter.admits(info.key):
                    result.filtered += 1
                    continue
                request = ScanRequest(
                    lane=Lane.BULK, source=Source.BACKFILL, object=self.store.ref(info.key, info)
                )
                pending.append(
                    Outgoing(self._topic, encode(request), request.key.encode(), inject_headers())
                )
                if len(pending) >= self.settings.ingest.batch_size:
                    since_checkpoint += await self._flush(pending, result)
                    if since_checkpoint >= self.settings.ingest.checkpoint_every:
                        await self._checkpoint(name, last_key)
                        since_checkpoint = 0
            await self._flush(pending, result)
            if stop is not None and stop.is_set():
                if last_key is not None:
                    await self._checkpoint(name, last_key)
                return result
        result.completed = True
        if self.state is not None:
            await self.state.clear_checkpoint(name)
        return result

    async def _flush(self, pending: list[Outgoing], result: BackfillResult) -> int:
        if not pending:
            return 0
        n = len(pending)
        await self.bus.produce_many(pending)
        pending.clear()
        result.produced += n
        if self.on_produced is not None:
            self.on_produced(n)
        return n

    async def _checkpoint(self, name: str, key: str | None) -> None:
        # Only keys whose requests were acknowledged reach here (the flush came first).
        if self.state is not None and key is not None:
            await self.state.set_checkpoint(name, key)
