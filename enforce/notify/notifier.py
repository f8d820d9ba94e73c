"""Fan notices out to channels: minimum severity, digests, deduplication by verdict id.

Each channel sends at most one message per ``digest_interval_s``: the first notice after a
quiet interval goes out at once; what arrives before the interval ends is gathered and sent
as one digest with counts. Alerts (guard tripped, quarantine exposed) skip the digest.
Delivery runs in background tasks, so a slow or dead receiver never slows enforcement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind

from enforce.notify.channels import DeliveryError, Sender, deliver, sender_for
from enforce.notify.message import Notice, digest_payload
from enforce.settings import NotifySettings
from pipeline import metrics
from pipeline.state.table import Table
from pipeline.tracing import ROOT, current_span_context, span

log = logging.getLogger(__name__)
_SEEN_IN_MEMORY = 10_000


class _Worker:
    """The queue, digest timer and deliveries of one channel."""

    def __init__(self, sender: Sender, instance: str, clock: Callable[[], float]) -> None:
        self.sender = sender
        self.channel = sender.channel
        self.instance = instance
        self.clock = clock
        self.pending: list[Notice] = []
        # The span each pending notice was queued in (None: tracing off), for its delivery.
        self.pending_spans: list[SpanContext | None] = []
        self.last_sent = float("-inf")
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.deliveries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"notify-{self.channel.label}")

    def put(self, notice: Notice) -> None:
        if notice.urgent:
            # The delivery task inherits the current span: its span is a child.
            self._spawn(dict(notice.payload), notice.dedupe_key)
            return
        self.pending.append(notice)
        self.pending_spans.append(current_span_context())
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            due = self.last_sent + self.channel.digest_interval_s
            delay = due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self.flush()

    def flush(self) -> None:
        """Send what is pending now, as one message."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        spans, self.pending_spans = self.pending_spans, []
        self.last_sent = self.clock()
        if len(batch) == 1 or self.channel.digest_interval_s == 0:
            for notice, queued_in in zip(batch, spans, strict=True):  # one message each
                self._spawn(dict(notice.payload), notice.dedupe_key, [queued_in])
        else:
            key = f"digest:{batch[0].dedupe_key}:{len(batch)}"
            self._spawn(digest_payload(batch, self.instance), key, spans)

    def _spawn(
        self,
        payload: dict[str, object],
        event_id: str,
        queued_in: Sequence[SpanContext | None] = (),
    ) -> None:
        spans = [context for context in queued_in if context is not None]
        task = asyncio.create_task(self._deliver(payload, event_id, spans))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def _deliver(
        self, payload: dict[str, object], event_id: str, queued_in: list[SpanContext]
    ) -> None:
        # One notice: its delivery continues the notice's trace. A digest serves many
        # traces: a root span linked to each.
        parent = None
        if len(queued_in) == 1:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(queued_in[0]))
        elif queued_in:
            parent = ROOT
        links = [Link(c) for c in queued_in] if len(queued_in) > 1 else None
        attributes = {
            "pictguard.channel": self.channel.label,
            "pictguard.event": str(payload.get("event", "")),
        }
        with span(
            "notify.deliver",
            kind=SpanKind.CLIENT,
            context=parent,
            links=links,
            attributes=attributes,
        ):
            await self._deliver_in_span(payload, event_id)

    async def _deliver_in_span(self, payload: dict[str, object], event_id: str) -> None:
        try:
            await deliver(self.sender, payload, event_id)
            metrics.record_notification(self.channel.label, sent=True)
        except DeliveryError as exc:
            metrics.record_notification(self.channel.label, sent=False)
            log.error(
                "notification lost after retries",
                extra={
                    "channel": self.channel.label,
                    "event": payload.get("event"),
                    "error": str(exc),
                },
            )
        except Exception:  # a bug in one channel must not stop the others
            metrics.record_notification(self.channel.label, sent=False)
            log.exception("notification failed", extra={"channel": self.channel.label})

    async def drain(self, grace_s: float) -> None:
        self.flush()
        if self.deliveries:
            await asyncio.wait(list(self.deliveries), timeout=grace_s)

    async def stop(self, grace_s: float) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.drain(grace_s)
        for task in list(self.deliveries):
            task.cancel()
        await self.sender.close()


class Notifier:
    """Tells admins what enforce did, through every configured channel."""

    def __init__(
        self,
        settings: NotifySettings,
        sent: Table | None = None,
        *,
        senders: Sequence[Sender] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._sent = sent
        self._senders = (
            list(senders) if senders is not None else [sender_for(c) for c in settings.channels]
        )
        self._clock = clock
        self._workers: list[_Worker] = []
        # Recent keys in memory spare a state read per notice; the table has them all.
        self._seen: OrderedDict[str, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured."""
        return bool(self._senders)

    async def start(self) -> None:
        if self._sent is not None:
            await self._sent.start()
        self._workers = [_Worker(s, self.settings.instance, self._clock) for s in self._senders]
        for worker in self._workers:
            worker.start()

    async def notify(self, notice: Notice) -> None:
        """Queue ``notice`` for every channel whose minimum severity it reaches, once."""
        if not self._workers or notice.dedupe_key in self._seen:
            return
        attributes = {"pictguard.severity": str(notice.severity), "pictguard.urgent": notice.urgent}
        with span("notify", attributes=attributes):
            await self._notify(notice)

    async def _notify(self, notice: Notice) -> None:
        self._seen[notice.dedupe_key] = None
        if len(self._seen) > _SEEN_IN_MEMORY:
            self._seen.popitem(last=False)
        if self._sent is not None:
            if await self._sent.get(notice.dedupe_key) is not None:
                return
            await self._sent.put(notice.dedupe_key, str(time.time()).encode())
        for worker in self._workers:
            if notice.severity.rank >= worker.channel.min_severity.rank:
                worker.put(notice)

    async def flush(self, grace_s: float = 30.0) -> None:
        """Send every pending digest now and wait (up to ``grace_s``) for deliveries."""
        await asyncio.gather(*(w.drain(grace_s) for w in self._workers))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Send what is pending, wait up to ``grace_s`` for deliveries, close channels."""
        await asyncio.gather(*(w.stop(grace_s) for w in self._workers))
        self._workers = []
