"""From parsed notifications to scan requests: filter, dedupe, produce, dead-letter.

Every event source (the raw topic, the webhook, the SQS poller, the watcher) hands its
payloads to one :class:`Intake`. For a batch of payloads it produces every scan request and
every dead-letter record in one ``produce_many`` and returns once the bus acknowledged them,
so the caller may then commit its offsets, answer 200 or delete its SQS messages.

Concurrent callers (webhook requests) never produce the same object twice: a payload whose
object is being produced by another caller waits for that produce, then counts as a repeat
if it succeeded or goes ahead if it failed.

Where an object may come from is checked here for every source: an object outside
``storage.allowed_locations`` (the :class:`pipeline.storage.locations.Scope`) is refused
and dead-lettered (reason ``location_not_allowed``), a folder key that leaves its folder
(``..``, absolute) is dead-lettered as ``unsafe_key``, and objects inside the quarantine
location (pictguard's own copies) are filtered out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.dedupe import DedupeWindow, Identity
from ingest.filters import KeyFilter
from ingest.settings import IngestConfig
from ingest.sources import Normalizer, ObjectEvent, ParseResult
from pipeline import metrics
from pipeline.bus.base import Bus, Outgoing
from pipeline.events import DeadLetter, Lane, ScanRequest, Source, StoreKind, encode
from pipeline.storage.locations import Scope, UnsafePath, check_key
from pipeline.topics import DEAD_LETTER, SCAN_BULK
from pipeline.tracing import inject_headers

log = logging.getLogger(__name__)

# Dead-letter records keep the start of the payload for the admin, not all of it.
MAX_DEAD_LETTER_PAYLOAD = 65536
NOT_ALLOWED = "location_not_allowed"
UNSAFE_KEY = "unsafe_key"
IN_QUARANTINE = "inside the quarantine location"


@dataclass(frozen=True, slots=True)
class Payload:
    """One received notification body and where it came from."""

    body: bytes
    origin: str  # the topic, "webhook:/hooks/minio", "sqs:<queue>"
    message_key: bytes | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class Outcome:
    """What became of one payload."""

    produced: int = 0
    repeats: int = 0
    filtered: int = 0
    ignored: int = 0
    removals: int = 0
    refused: int = 0  # outside the allowed locations, or an unsafe folder key
    error: str | None = None
    dead_lettered: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """The payload said nothing usable at all (a 400 for an HTTP sender)."""
        return self.dead_lettered and not (
            self.produced
            or self.repeats
            or self.filtered
            or self.ignored
            or self.removals
            or self.refused
        )


class Intake:
    """Turns payloads of one source into acknowledged scan requests."""

    def __init__(
        self,
        settings: IngestConfig,
        bus: Bus,
        *,
        normalizer: Normalizer | None = None,
        source: Source = Source.EVENT,
        dedupe: DedupeWindow | None = None,
        key_filter: KeyFilter | None = None,
        scope: Scope | None = None,
    ) -> None:
        self.settings = settings
        self.scope = scope or Scope()
        self.bus = bus
        self.normalizer = normalizer
        self.source = source
        self.dedupe = dedupe or DedupeWindow(
            settings.ingest.dedupe_window_s, settings.ingest.dedupe_max_entries
        )
        self.key_filter = key_filter or KeyFilter.from_settings(settings.ingest)
        self.scan_topic = settings.topic(SCAN_BULK)
        self.dead_letter_topic = settings.topic(DEAD_LETTER)
        self._label = normalizer.name if normalizer is not None else source.value

    async def submit(self, payloads: Sequence[Payload]) -> list[Outcome]:
        """Parse, filter, dedupe and produce ``payloads``; one :class:`Outcome` each.

        Returns after the bus acknowledged every record; raises :class:`BusError` (nothing
        remembered, safe to retry) when it did not.
        """
        if self.normalizer is None:
            raise TypeError("Intake.submit needs a normalizer; use submit_events for objects")
        parsed = [self.normalizer.parse(p.body, message_key=p.message_key) for p in payloads]
        return await self._submit(payloads, parsed)

    async def submit_events(self, events: Sequence[ObjectEvent], origin: str) -> Outcome:
        """Produce scan requests for objects a source found itself (watcher, listing)."""
        result = ParseResult(events=list(events))
        outcomes = await self._submit([Payload(b"", origin)], [result])
        return outcomes[0]

    async def _submit(
        self, payloads: Sequence[Payload], parsed: Sequence[ParseResult]
    ) -> list[Outcome]:
        outcomes = [Outcome() for _ in payloads]
        candidates: list[tuple[int, ObjectEvent, Identity]] = []
        outgoing: list[Outgoing] = []
        for i, (payload, result) in enumerate(zip(payloads, parsed, strict=True)):
            outcome = outcomes[i]
            outcome.ignored = len(result.ignored)
            outcome.reasons.extend(result.ignored)
            outcome.removals = len(result.removals)
            if result.error is not None:
                outcome.error = f"{result.error.reason}: {result.error.detail}"
                outcome.dead_lettered = True
                outgoing.append(
                    self._dead_letter(payload, result.error.reason, result.error.detail)
                )
            for event in result.events:
                refusal = self._refusal(event)
                if refusal is not None:
                    outcome.refused += 1
                    outcome.reasons.append(refusal[1])
                    outcome.dead_lettered = True
                    outcome.error = outcome.error or f"{refusal[0]}: {refusal[1]}"
                    outgoing.append(self._dead_letter(payload, *refusal))
                    continue
                reason = self._excluded(event) or self.key_filter.rejection(
                    event.key,
                    size=event.size,
                    content_type=event.content_type,
                    store=event.store,
                    root=event.bucket,
                )
                if reason is not None:
                    outcome.filtered += 1
                    outcome.reasons.append(reason)
                    continue
                candidates.append((i, event, Identity.of(event)))

        await self._wait_for_twins([ident for _, _, ident in candidates])
        # From here to the produce nothing awaits, so no other caller can claim an object.
        claimed: list[tuple[int, Identity]] = []
        batch_keys: set[bytes] = set()
        headers = inject_headers()
        for i, event, ident in candidates:
            keys = ident.tokens()
            if self.dedupe.is_repeat(ident) or any(k in batch_keys for k in keys):
                outcomes[i].repeats += 1
                continue
            batch_keys.update(keys)
            claimed.append((i, ident))
            ref = event.ref()
            request = ScanRequest(lane=Lane.BULK, source=self.source, object=ref)
            outgoing.append(Outgoing(self.scan_topic, encode(request), ref.id.encode(), headers))
            outcomes[i].produced += 1

        # One future marks every object of this call as being produced.
        producing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        claimed_keys = [key for _, ident in claimed for key in ident.tokens()]
        for key in claimed_keys:
            self.dedupe.inflight[key] = producing
        try:
            if outgoing:
                await self.bus.produce_many(outgoing)
            # Acknowledged: remember what was scanned and forget what was removed, in the
            # order the store said it.
            by_payload: dict[int, list[Identity]] = {}
            for i, ident in claimed:
                by_payload.setdefault(i, []).append(ident)
            for i, result in enumerate(parsed):
                for ident in by_payload.get(i, ()):
                    self.dedupe.remember(ident)
                for removal in result.removals:
                    self.dedupe.forget_object(removal.bucket, removal.key)
        finally:
            for key in claimed_keys:
                if self.dedupe.inflight.get(key) is producing:
                    del self.dedupe.inflight[key]
            producing.set_result(None)
        self._count(outcomes)
        return outcomes

    def _refusal(self, event: ObjectEvent) -> tuple[str, str] | None:
        """(reason, detail) when ``event``'s object must not be scanned at all."""
        if event.store is StoreKind.FILE:
            try:
                check_key(event.key)
            except UnsafePath as exc:
                return UNSAFE_KEY, str(exc)
        why = self.scope.refusal(event.ref())
        return (NOT_ALLOWED, why) if why is not None else None

    def _excluded(self, event: ObjectEvent) -> str | None:
        # pictguard's own copies (a quarantine prefix inside a notified bucket) are not news.
        return IN_QUARANTINE if self.scope.in_quarantine(event.ref()) else None

    async def _wait_for_twins(self, idents: Sequence[Identity]) -> None:
        """Wait until no other caller is producing any of ``idents``' objects.

        Nothing is held while waiting, so two callers can never wait on each other.
        """
        while True:
            pending = {
                future
                for ident in idents
                for key in ident.tokens()
                if (future := self.dedupe.inflight.get(key)) is not None
            }
            if not pending:
                return
            await asyncio.wait(pending)

    def _dead_letter(self, payload: Payload, reason: str, detail: str) -> Outgoing:
        record = DeadLetter(
            source_topic=payload.origin,
            source_key=payload.message_key.decode(errors="replace")
            if payload.message_key
            else None,
            partition=payload.partition,
            offset=payload.offset,
            reason=reason,
            detail=detail,
            payload=payload.body[:MAX_DEAD_LETTER_PAYLOAD],
        )
        # Reasons and details are ours and never quote the payload, so they are safe to log.
        log.warning(
            "dead-lettered a notification from %s (partition %s offset %s): %s: %s",
            payload.origin,
            payload.partition,
            payload.offset,
            reason,
            detail,
            extra={"origin": payload.origin, "reason": reason},
        )
        metrics.record_ingest_dead_letter(self._label, reason)
        return Outgoing(self.dead_letter_topic, encode(record), record.key.encode())

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        totals = {
            "produced": 0,
            "repeat": 0,
            "filtered": 0,
            "ignored": 0,
            "removed": 0,
            "refused": 0,
        }
        for o in outcomes:
            totals["refused"] += o.refused
            totals["produced"] += o.produced
            totals["repeat"] += o.repeats
            totals["filtered"] += o.filtered
            totals["ignored"] += o.ignored
            totals["removed"] += o.removals
        for outcome, n in totals.items():
            metrics.record_ingest(self._label, outcome, n)
        metrics.record_scan_requests(self.source, Lane.BULK, totals["produced"])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ingest %s: %s", self._label, totals, extra={"counts": totals})
