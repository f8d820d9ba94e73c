"""Ceph RGW bucket notifications, from a Kafka or HTTP push endpoint on an SNS-style topic.

Shape (PROTOCOLS.md): ``{"Records": [...]}`` with AWS-format records, ``eventSource``
``ceph:s3``, event names without the ``s3:`` prefix. The key is sent **raw**, not encoded: a
``+`` or ``%`` in it is part of the name. Kafka messages have a null key. ``sequencer`` does
not order anything, so repeats are recognised by ``eventId``. Some versions spell ``etag``
instead of ``eTag``, and ``size`` may be a string.
"""

from __future__ import annotations

from ingest.sources.common import (
    ParseResult,
    ShapeError,
    guarded,
    load_json,
    parse_records,
    raw_key,
    require_dict,
)

EVENT_SOURCE = "ceph:s3"


def parse_payload(payload: object) -> ParseResult:
    """A decoded Ceph payload as events."""
    data = require_dict(payload, "payload")
    if "Records" not in data:
        raise ShapeError("unknown_shape", "no Records in a Ceph notification")
    return parse_records(
        data["Records"],
        "Records",
        decode_key=raw_key,
        ordered_sequencer=False,
        use_event_id=True,
    )


class CephNormalizer:
    """Ceph HTTP push bodies and Kafka values."""

    name = "ceph"

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult:
        return guarded(lambda b: parse_payload(load_json(b)), body)
