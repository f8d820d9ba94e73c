"""Uploads accepted without a verdict, as one warning per interval on the admins' channels.

The validate API counts such uploads per reason and publishes the counts to the
``unverified-accepts`` topic (``validate_api.unverified``); :class:`UnverifiedDigest` reads
them (in one process and on Kafka alike), adds them up, and tells admins at most once per
``enforce.notify.unverified_interval_s``: the first report after a quiet interval goes out
at once, what comes during the interval is summed into the next warning (count, reasons,
time window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

from enforce.notify.message import unverified_notice
from enforce.notify.notifier import Notifier
from enforce.settings import NotifySettings
from pipeline.bus.base import Message
from pipeline.events import SchemaError, UnverifiedAccepts, decode

log = logging.getLogger(__name__)


class UnverifiedDigest:
    """Sums the API's unverified-accept counts and sends them as warnings."""

    def __init__(
        self,
        notifier: Notifier,
        settings: NotifySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.first: datetime | None = None
        self.last: datetime | None = None
        self._first_report = ""
        self.last_sent = float("-inf")
        self._wake = asyncio.Event()

    async def handle(self, batch: Sequence[Message]) -> None:
        """Add a batch of ``unverified-accepts`` records (the consume loop's handler)."""
        for message in batch:
            try:
                report = decode(message.value, UnverifiedAccepts)
            except SchemaError as exc:
                log.warning("ignoring a malformed unverified-accepts record: %s", exc)
                continue
            self.add(report)

    def add(self, report: UnverifiedAccepts) -> None:
        """Count one report; the timer sends it."""
        if not report.counts:
            return
        for reason, count in report.counts.items():
            self.counts[reason] += count
        self._first_report = self._first_report or report.report_id
        self.first = min(self.first or report.first_at, report.first_at)
        self.last = max(self.last or report.last_at, report.last_at)
        log.warning(
            "uploads accepted without a verdict",
            extra={"replica": report.replica, "counts": dict(report.counts)},
        )
        self._wake.set()

    def due_in(self) -> float:
        """Seconds until the pending count may go out (0: now)."""
        return max(0.0, self.last_sent + self.settings.unverified_interval_s - self.clock())

    async def flush(self) -> None:
        """Send what is counted as one warning now."""
        if not self.counts or self.first is None or self.last is None:
            return
        notice = unverified_notice(
            self.counts,
            self.first,
            self.last,
            f"unverified:{self._first_report}",
            self.settings,
        )
        self.counts, self.first, self.last, self._first_report = Counter(), None, None, ""
        self.last_sent = self.clock()
        await self.notifier.notify(notice)

    async def run(self, stop: asyncio.Event) -> None:
        """Send the pending count whenever its interval allows, until ``stop``; then once
        more, so what was counted before a shutdown is not lost."""
        try:
            while not stop.is_set():
                await _first_of(self._wake.wait(), stop.wait())
                self._wake.clear()
                delay = self.due_in()
                if delay > 0:
                    await _first_of(asyncio.sleep(delay), stop.wait())
                await self.flush()
        finally:
            await self.flush()


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
