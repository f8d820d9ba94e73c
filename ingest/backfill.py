"""Backfill: list a bucket/prefix or walk a folder and publish one scan request per object.

Listing is in key order on both stores, so the checkpoint is simply the last key whose scan
request the bus acknowledged; a crashed or interrupted backfill resumes after it.

Hardening for large stores (settings ``ingest.backfill``):

- several prefixes listed in parallel (``prefixes``, ``parallel``), each with its own
  checkpoint; a prefix that finished is marked done until the whole backfill is, so a
  resumed run does not list it again;
- a rate limit in objects per second, shared by the parallel listers (``rate_limit``);
- ``since``: only objects modified at or after that moment;
- an estimated total and ETA: a second, keys-only listing counts what is left to do ahead
  of the producers (``estimate_total``), reported through ``on_progress``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest.filters import KeyFilter
from ingest.pacing import Progress, RateLimiter
from ingest.settings import IngestConfig
from pipeline import metrics
from pipeline.bus.base import Bus, Outgoing
from pipeline.events import Lane, ScanRequest, Source, encode
from pipeline.state.sqlite import SqliteState
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.storage.locations import Location, LocationNotAllowed
from pipeline.topics import SCAN_BULK
from pipeline.tracing import new_trace_headers, tracer

log = logging.getLogger(__name__)

_DONE = "#done"
TOO_OLD = "older than ingest.backfill.since"


@dataclass
class BackfillResult:
    listed: int = 0
    produced: int = 0
    filtered: int = 0
    too_old: int = 0
    # Why objects were skipped (the filters' reasons, and ``since``), with how many each.
    skipped: Counter[str] = field(default_factory=Counter)
    resumed_after: str | None = None
    completed: bool = False
    parts: int = 1
    parts_done_before: int = 0


def checkpoint_name(location: Location) -> str:
    return f"backfill:{location}"


def split_location(location: Location, prefixes: Sequence[str]) -> list[Location]:
    """``location`` narrowed to each of ``prefixes``; prefixes inside another one dropped."""
    if not prefixes:
        return [location]
    wanted = sorted({location.prefix + p for p in prefixes})
    kept: list[str] = []
    for prefix in wanted:
        if not any(prefix.startswith(k) for k in kept):
            kept.append(prefix)
    return [Location(location.kind, location.root, p) for p in kept]


class Backfill:
    """Publishes scan requests for every admitted object under ``location``.

    Keyword arguments left unset come from ``settings.ingest.backfill``.
    """

    def __init__(
        self,
        bus: Bus,
        settings: IngestConfig,
        store: ObjectStore,
        location: Location,
        state: SqliteState | None,
        *,
        on_produced: Callable[[int], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        prefixes: Sequence[str] | None = None,
        parallel: int | None = None,
        rate_limit: float | None = None,
        since: datetime | None = None,
        estimate_total: bool | None = None,
    ) -> None:
        options = settings.ingest.backfill
        self.bus = bus
        self.settings = settings
        self.store = store
        self.location = location
        self.state = state
        self.filter = KeyFilter.from_settings(settings.ingest)
        self.on_produced = on_produced
        self.on_progress = on_progress
        self.parts = split_location(location, options.prefixes if prefixes is None else prefixes)
        self.parallel = parallel or options.parallel
        rate = options.rate_limit if rate_limit is None else rate_limit
        self.limiter = RateLimiter(rate) if rate else None
        moment = options.since if since is None else since
        self.since = moment.replace(tzinfo=UTC) if moment and not moment.tzinfo else moment
        self.estimate = options.estimate_total if estimate_total is None else estimate_total
        self.batch_size = settings.ingest.batch_size
        if self.limiter is not None:
            self.batch_size = self.limiter.batch_size(self.batch_size)
        self._topic = settings.topic(SCAN_BULK)
        self.progress = Progress(started=time.monotonic())

    @property
    def _multi(self) -> bool:
        return len(self.parts) > 1 or self.parts[0] != self.location

    async def run(
        self, stop: asyncio.Event | None = None, *, resume: bool = True
    ) -> BackfillResult:
        stop = stop or asyncio.Event()
        if self.store.hides(self.location.prefix):
            raise LocationNotAllowed(
                f"{self.location} lies in the quarantine location; pictguard never scans "
                "its own quarantine"
            )
        result = BackfillResult(parts=len(self.parts))
        self.progress = Progress(started=time.monotonic())
        starts: dict[Location, str | None] = {}
        todo: list[Location] = []
        for part in self.parts:
            name = checkpoint_name(part)
            if self.state is not None and resume:
                if self._multi and await self.state.get_checkpoint(name + _DONE):
                    result.parts_done_before += 1
                    continue
                starts[part] = await self.state.get_checkpoint(name)
                if starts[part]:
                    log.info("resuming backfill of %s after %s", part, starts[part])
            else:
                starts[part] = None
            todo.append(part)
        if len(self.parts) == 1:
            result.resumed_after = starts.get(self.parts[0])

        counter = asyncio.create_task(self._count(todo, starts, stop)) if self.estimate else None
        gate = asyncio.Semaphore(self.parallel)

        async def one(part: Location) -> bool:
            async with gate:
                return await self._run_part(part, starts[part], stop, result)

        try:
            with tracer.start_as_current_span("ingest.backfill"):
                finished = await asyncio.gather(*(one(p) for p in todo))
        finally:
            if counter is not None:
                counter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await counter
        if not all(finished):
            return result
        result.completed = True
        # Every part was listed to its end, so the count is exact now, whether or not the
        # keys-only estimate finished first.
        self.progress.total = self.progress.produced
        self.progress.counted = True
        if self.state is not None:
            for part in self.parts:
                await self.state.clear_checkpoint(checkpoint_name(part))
                if self._multi:
                    await self.state.clear_checkpoint(checkpoint_name(part) + _DONE)
        self._report()
        return result

    def _skip(self, info: ObjectInfo) -> str | None:
        """Why ``info`` gets no scan request (None: it gets one)."""
        if self.since is not None and info.last_modified is not None:
            modified = info.last_modified
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=UTC)
            if modified < self.since:
                return TOO_OLD
        return self.filter.rejection(
            info.key, size=info.size, store=self.store.kind, root=self.store.location
        )

    async def _run_part(
        self, part: Location, start_after: str | None, stop: asyncio.Event, result: BackfillResult
    ) -> bool:
        """List one part; True if it reached its end."""
        name = checkpoint_name(part)
        pending: list[Outgoing] = []
        last_key: str | None = None
        since_checkpoint = 0
        async for info in self.store.list(part.prefix, start_after=start_after):
            if stop.is_set():
                break
            result.listed += 1
            self.progress.listed += 1
            last_key = info.key
            skip = self._skip(info)
            if skip is not None:
                result.skipped[skip] += 1
            if skip == TOO_OLD:
                result.too_old += 1
                self.progress.too_old += 1
                continue
            if skip is not None:
                result.filtered += 1
                self.progress.filtered += 1
                continue
            request = ScanRequest(
                lane=Lane.BULK, source=Source.BACKFILL, object=self.store.ref(info.key, info)
            )
            pending.append(
                Outgoing(self._topic, encode(request), request.key.encode(), self._headers(request))
            )
            if len(pending) >= self.batch_size:
                since_checkpoint += await self._flush(pending, result)
                if since_checkpoint >= self.settings.ingest.checkpoint_every:
                    await self._checkpoint(name, last_key)
                    since_checkpoint = 0
        await self._flush(pending, result)
        if stop.is_set():
            if last_key is not None:
                await self._checkpoint(name, last_key)
            return False
        if self._multi and self.state is not None:
            await self.state.set_checkpoint(name + _DONE, "1")
        return True

    async def _flush(self, pending: list[Outgoing], result: BackfillResult) -> int:
        if not pending:
            return 0
        n = len(pending)
        if self.limiter is not None:
            await self.limiter.acquire(n)
        await self.bus.produce_many(pending)
        metrics.record_scan_requests(Source.BACKFILL, Lane.BULK, n)
        pending.clear()
        result.produced += n
        self.progress.produced += n
        if self.on_produced is not None:
            self.on_produced(n)
        self._report()
        return n

    @staticmethod
    def _headers(request: ScanRequest) -> dict[str, str]:
        # One trace per object, linked to the backfill's span (not one trace for a bucket).
        assert request.object is not None
        return new_trace_headers("ingest.enqueue", {"pictguard.object": request.object.id})

    async def _checkpoint(self, name: str, key: str | None) -> None:
        # Only keys whose requests were acknowledged reach here (the flush came first).
        if self.state is not None and key is not None:
            await self.state.set_checkpoint(name, key)

    async def _count(
        self, parts: Sequence[Location], starts: dict[Location, str | None], stop: asyncio.Event
    ) -> None:
        """Count what this run will produce, ahead of the producers (keys only, no bus)."""
        total = 0
        try:
            for part in parts:
                async for info in self.store.list(part.prefix, start_after=starts.get(part)):
                    if stop.is_set():
                        return
                    if self._skip(info) is None:
                        total += 1
                        if total % 1000 == 0:
                            self.progress.total = total
            self.progress.total = total
            self.progress.counted = True
            log.info("backfill of %s: %d objects to scan", self.location, total)
        except Exception as exc:  # noqa: BLE001 — an estimate is optional; the backfill goes on
            log.warning("could not count the objects of %s for the ETA: %s", self.location, exc)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.progress.now = time.monotonic()
            self.on_progress(self.progress)
