"""Backblaze B2 event notifications (HTTPS webhook).

Shape (PROTOCOLS.md): ``{"events": [{bucketName, objectName, objectSize, objectVersionId,
eventId, eventTimestamp, eventType, ...}]}`` with event types such as
``b2:ObjectCreated:Upload`` and ``b2:ObjectCreated:MultipartUpload``. Each request is signed:
``X-Bz-Event-Notification-Signature: v1=<hex>``, the HMAC-SHA256 of the raw body under the
rule's signing secret. The key encoding is not documented, so keys are taken raw.

The signature covers the body only, so a captured delivery stays valid for ever;
:class:`ReplayGuard` refuses events whose ``eventTimestamp`` lies outside a window and
``eventId`` values already seen within it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ingest.sources.common import (
    ObjectEvent,
    ParseResult,
    Removal,
    ShapeError,
    guarded,
    load_json,
    optional_str,
    parse_size,
    require_dict,
    require_str,
    shown,
)

SIGNATURE_HEADER = "X-Bz-Event-Notification-Signature"
TEST_EVENT = "b2:TestEvent"


def sign(secret: str, body: bytes) -> str:
    """The header value B2 sends for ``body`` (``v1=<hex>``)."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` carries a ``v1`` signature of ``body`` under ``secret``.

    Compared in constant time; several comma-separated signatures are accepted so a secret
    can be rotated.
    """
    expected = sign(secret, body).encode()
    ok = False
    for part in header.split(","):
        # Compare every candidate so the time taken does not reveal which one matched.
        ok |= hmac.compare_digest(part.strip().encode(), expected)
    return ok


def parse_payload(payload: Any) -> ParseResult:
    """A decoded B2 notification body as events."""
    data = require_dict(payload, "payload")
    events = data.get("events")
    if not isinstance(events, list) or not events:
        raise ShapeError("unknown_shape", "no events list in a B2 notification")
    result = ParseResult()
    for i, item in enumerate(events):
        try:
            _parse_event(item, f"events[{i}]", result)
        except ShapeError as exc:
            result.fail(exc)
    return result


def _parse_event(item: Any, where: str, result: ParseResult) -> None:
    event = require_dict(item, where)
    kind = require_str(event, "eventType", where)
    if kind == TEST_EVENT:
        result.ignored.append(TEST_EVENT)
        return
    bucket = require_str(event, "bucketName", where)
    key = require_str(event, "objectName", where)
    if kind.startswith("b2:ObjectDeleted:"):
        result.removals.append(Removal(bucket, key))
        return
    if not kind.startswith("b2:ObjectCreated:"):
        result.ignored.append(f"event {shown(kind)} does not create an object")
        return
    if key.endswith("/"):
        result.ignored.append("folder marker")
        return
    result.events.append(
        ObjectEvent(
            bucket=bucket,
            key=key,
            size=parse_size(event.get("objectSize"), f"{where}.objectSize"),
            version_id=optional_str(event, "objectVersionId"),
            event_id=optional_str(event, "eventId"),
            event_name=kind,
        )
    )


class B2Normalizer:
    """B2 webhook bodies (the signature is checked by the receiver, before parsing)."""

    name = "b2"

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult:
        return guarded(lambda b: parse_payload(load_json(b)), body)


@dataclass(frozen=True, slots=True)
class Screened:
    """A delivery after :meth:`ReplayGuard.screen`: what is left of it, and what was not."""

    body: bytes  # the delivery with only the fresh, unseen events
    kept: int
    stale: int  # eventTimestamp missing, too old or too far ahead
    replayed: int  # eventId seen within the window
    ids: tuple[str, ...]  # event ids now remembered (forget them if the delivery fails)


class ReplayGuard:
    """Refuses B2 events that are stale or were already delivered (one per ingest replica).

    An event counts while its ``eventTimestamp`` is within ``max_age_s`` of the clock (either
    way: a clock far ahead is no better); its ``eventId`` is remembered as long as the event
    would count, at most ``max_entries`` ids (the oldest forgotten first).
    """

    def __init__(
        self, max_age_s: float, max_entries: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def screen(self, body: bytes) -> Screened | None:
        """The delivery without stale and repeated events; None if it is no B2 events list
        (the normalizer then judges it as it is)."""
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        events = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return None
        now = self._clock()
        self._prune(now)
        kept: list[dict[str, Any]] = []
        ids: list[str] = []
        stale = replayed = 0
        for event in events:
            moment = _seconds(event.get("eventTimestamp"))
            if moment is None or abs(now - moment) > self.max_age_s:
                stale += 1
                continue
            event_id = event.get("eventId")
            if isinstance(event_id, str) and event_id:
                if event_id in self._seen or event_id in ids:
                    replayed += 1
                    continue
                ids.append(event_id)
            kept.append(event)
        for event_id in ids:
            self._seen[event_id] = now + self.max_age_s * 2
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        out = body if len(kept) == len(events) else json.dumps({**doc, "events": kept}).encode()
        return Screened(out, len(kept), stale, replayed, tuple(ids))

    def forget(self, ids: Iterable[str]) -> None:
        """Drop ids remembered for a delivery that was not handed on (B2 will retry it)."""
        for event_id in ids:
            self._seen.pop(event_id, None)

    def _prune(self, now: float) -> None:
        while self._seen:
            event_id, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[event_id]


def _seconds(value: Any) -> float | None:
    """``eventTimestamp`` (milliseconds since the epoch) in seconds; None if it is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) / 1000.0 if math.isfinite(value) else None
