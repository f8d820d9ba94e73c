"""Backblaze B2 event notifications (HTTPS webhook).

Shape (PROTOCOLS.md): ``{"events": [{bucketName, objectName, objectSize, objectVersionId,
eventId, eventTimestamp, eventType, ...}]}`` with event types such as
``b2:ObjectCreated:Upload`` and ``b2:ObjectCreated:MultipartUpload``. Each request is signed:
``X-Bz-Event-Notification-Signature: v1=<hex>``, the HMAC-SHA256 of the raw body under the
rule's signing secret. The key encoding is not documented, so keys are taken raw.
"""

from __future__ import annotations

import hashlib
import hmac
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
