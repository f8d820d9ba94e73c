"""Uploads let through without a real verdict: counted, published for enforce, and watched.

An upload answered 2xx without a verdict (``api.on_timeout``/``on_error``/``video``/
``on_overload: accept``) is kept by pict-rs and not looked at until something scans
storage. Admins must hear about it, so :class:`UnverifiedReporter` counts such answers per
reason and publishes the counts to the ``unverified-accepts`` topic every few seconds (one
small record per replica, however many uploads); enforce turns them into a warning digest
on the admins' channels, in one process and on Kafka alike.

:class:`ClassifierPath` says when the classifier path looks down: the last
``api.degraded_after`` uploads that needed classify got no verdict. It feeds ``/readyz``'s
body and a gauge, never readiness itself: an API taken out of its Service would make pict-rs
refuse every upload, and it could not see classify come back (no more uploads would reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from pipeline.bus.base import Bus, BusError
from pipeline.events import UnverifiedAccepts, UnverifiedReason, encode, utcnow
from pipeline.metrics import record_error, record_unverified_accept

log = logging.getLogger(__name__)

# How often the counts go to the bus while uploads go unverified.
REPORT_INTERVAL_S = 2.0
# A publish that hangs (broker gone) is given up after this long; the counts are kept.
PUBLISH_TIMEOUT_S = 10.0


class UnverifiedReporter:
    """Counts unverified accepts per reason and publishes them for enforce's digest."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        replica: str,
        *,
        interval_s: float = REPORT_INTERVAL_S,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.replica = replica
        self.interval_s = interval_s
        self._now = now
        self._counts: Counter[UnverifiedReason] = Counter()
        self._details: dict[UnverifiedReason, str] = {}
        self._first: datetime | None = None
        self._last: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_warned = float("-inf")

    def add(self, reason: UnverifiedReason, detail: str) -> None:
        """One upload was accepted unverified (called on the request path: no I/O)."""
        record_unverified_accept(reason)
        now = self._now()
        self._counts[reason] += 1
        self._details[reason] = detail
        self._first = self._first or now
        self._last = now

    @property
    def pending(self) -> int:
        """Unverified accepts counted but not yet acknowledged by the bus."""
        return sum(self._counts.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="unverified-reporter")

    async def stop(self) -> None:
        """Stop the timer and publish what is counted (once, briefly: the API is stopping)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self.pending:
            log.error(
                "%d uploads accepted without a verdict were not reported to enforce before "
                "the API stopped (the bus did not take the record); admins were not told",
                self.pending,
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Publish the counts so far; on failure keep them for the next try."""
        if not self._counts or self._first is None or self._last is None:
            return
        record = UnverifiedAccepts(
            replica=self.replica,
            counts=dict(self._counts),
            details=dict(self._details),
            first_at=self._first,
            last_at=self._last,
        )
        # Taken now: uploads counted while the record is on its way start the next one.
        self._counts, self._details, self._first, self._last = Counter(), {}, None, None
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.bus.produce(self.topic, encode(record), record.key.encode())
        except (BusError, OSError, TimeoutError) as exc:
            self._restore(record)
            now = time.monotonic()
            if now - self._last_warned >= 60:
                self._last_warned = now
                log.warning(
                    "cannot report %d uploads accepted without a verdict to enforce yet (%s); "
                    "kept and retried",
                    self.pending,
                    exc,
                )
                record_error("api", "unverified_not_reported")

    def _restore(self, record: UnverifiedAccepts) -> None:
        self._counts.update(record.counts)
        for reason, detail in record.details.items():
            self._details.setdefault(reason, detail)
        self._first = min(record.first_at, self._first or record.first_at)
        self._last = max(record.last_at, self._last or record.last_at)


class ClassifierPath:
    """Whether uploads that need classify get verdicts; see the module docstring."""

    def __init__(self, degraded_after: int) -> None:
        self.degraded_after = degraded_after
        self.misses = 0  # consecutive uploads that got no verdict
        self.last_miss = ""

    def verdict(self) -> None:
        """A verdict came back from classify: the path works."""
        self.misses = 0

    def miss(self, why: str) -> None:
        """An upload that needed classify got no verdict (timeout, broker unreachable)."""
        self.misses += 1
        self.last_miss = why

    @property
    def down(self) -> bool:
        return self.misses >= self.degraded_after

    def reason(self) -> str | None:
        """Why the path looks down, for ``/readyz``; None while it works."""
        if not self.down:
            return None
        return (
            f"classifier path down: the last {self.misses} uploads that needed classify got "
            f"no verdict (last: {self.last_miss}); uploads are answered per api.on_timeout"
        )
