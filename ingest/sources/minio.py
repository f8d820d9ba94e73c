"""MinIO bucket notifications, from its Kafka target (``notify_kafka``) or webhook target.

Shape (PROTOCOLS.md): an envelope ``{"EventName", "Key", "Records": [one record]}`` around an
AWS-format record with ``eventVersion`` ``2.0``, ``eventSource`` ``minio:s3`` and event names
prefixed ``s3:`` (``s3:ObjectCreated:Put``). The record's key is query-escaped (``/`` →
``%2F``, space → ``+``); the envelope's ``Key`` is ``bucket/<decoded key>`` and so is the
Kafka message key. ``sequencer`` is the hex modification time in nanoseconds, so it orders
writes to one key.
"""

from __future__ import annotations

from ingest.sources.common import (
    ParseResult,
    ShapeError,
    decode_form_key,
    guarded,
    load_json,
    parse_records,
    require_dict,
)

EVENT_SOURCE = "minio:s3"


def is_envelope(payload: dict[str, object]) -> bool:
    """MinIO wraps its record in ``EventName``/``Key``; nobody else does."""
    return "EventName" in payload and "Records" in payload


def parse_payload(payload: object) -> ParseResult:
    """A decoded MinIO payload (envelope, or a bare ``Records`` object) as events."""
    data = require_dict(payload, "payload")
    if "Records" not in data:
        raise ShapeError(
            "unknown_shape", "no Records in a MinIO notification (expected EventName/Key/Records)"
        )
    return parse_records(
        data["Records"],
        "Records",
        decode_key=decode_form_key,
        ordered_sequencer=True,
        use_event_id=False,
    )


class MinioNormalizer:
    """MinIO webhook bodies and Kafka values."""

    name = "minio"

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult:
        return guarded(lambda b: parse_payload(load_json(b)), body)
