"""AWS S3 notifications as an SQS queue receives them: raw, wrapped by SNS, or from EventBridge.

Shapes (PROTOCOLS.md):

- raw S3 records: ``{"Records": [...]}``, ``eventSource`` ``aws:s3``, event names without the
  ``s3:`` prefix (``ObjectCreated:Put``);
- the ``s3:TestEvent`` message (no ``Records``) S3 sends after notifications are configured;
- SNS-wrapped: ``{"Type": "Notification", "Message": "<the S3 message as a JSON string>"}``;
- EventBridge: ``{"detail-type": "Object Created", "source": "aws.s3", "detail": {"bucket":
  {"name"}, "object": {"key", "size", "etag", "version-id", "sequencer"}}}``.

Keys are form-URL-encoded (space → ``+``, ``/`` kept) and decoded with ``unquote_plus``.
``sequencer`` is hex and orders writes to one key once right-padded with zeros.
"""

from __future__ import annotations

from typing import Any

from ingest.sources.common import (
    ObjectEvent,
    ParseResult,
    Removal,
    ShapeError,
    clean_etag,
    decode_form_key,
    guarded,
    load_json,
    optional_str,
    parse_records,
    parse_size,
    require_dict,
    require_str,
    shown,
)

EVENT_SOURCE = "aws:s3"
TEST_EVENT = "s3:TestEvent"
# EventBridge detail types that put new bytes in the bucket.
_EB_CREATED = "Object Created"
_EB_REMOVED = "Object Deleted"


def parse_payload(payload: Any, *, depth: int = 0) -> ParseResult:
    """Any of the four AWS shapes, already JSON-decoded."""
    data = require_dict(payload, "payload")
    if data.get("Event") == TEST_EVENT:
        result = ParseResult()
        result.ignored.append(f"{TEST_EVENT} for bucket {shown(data.get('Bucket'))}")
        return result
    if "Records" in data:
        return parse_records(
            data["Records"],
            "Records",
            decode_key=decode_form_key,
            ordered_sequencer=True,
            use_event_id=False,
        )
    if "Type" in data and "TopicArn" in data:
        return _parse_sns(data, depth)
    if "detail-type" in data and "detail" in data:
        return _parse_eventbridge(data)
    raise ShapeError(
        "unknown_shape",
        "not an S3 notification: expected Records, an SNS Notification, an EventBridge "
        "event or s3:TestEvent",
    )


def _parse_sns(data: dict[str, Any], depth: int) -> ParseResult:
    kind = data.get("Type")
    if kind != "Notification":
        raise ShapeError(
            "unsupported",
            f"SNS message of type {shown(kind)}: pictguard reads SNS through an SQS queue "
            "subscribed to the topic, not through an HTTP subscription",
        )
    message = data.get("Message")
    if not isinstance(message, str):
        raise ShapeError("unknown_shape", "SNS Notification without a Message string")
    if depth > 0:
        raise ShapeError("unknown_shape", "SNS Notification wrapped in another SNS Notification")
    return parse_payload(load_json(message.encode()), depth=depth + 1)


def _parse_eventbridge(data: dict[str, Any]) -> ParseResult:
    result = ParseResult()
    kind = data.get("detail-type")
    source = data.get("source")
    if source != "aws.s3":
        raise ShapeError(
            "unknown_shape", f"EventBridge event from {shown(source)}, expected aws.s3"
        )
    detail = require_dict(data.get("detail"), "detail")
    bucket = require_str(require_dict(detail.get("bucket"), "detail.bucket"), "name", "bucket")
    obj = require_dict(detail.get("object"), "detail.object")
    key = decode_form_key(require_str(obj, "key", "detail.object"), "detail.object.key")
    if kind == _EB_REMOVED:
        result.removals.append(Removal(bucket, key))
        return result
    if kind != _EB_CREATED:
        result.ignored.append(f"EventBridge {shown(kind)} does not create an object")
        return result
    if key.endswith("/"):
        result.ignored.append("folder marker")
        return result
    result.events.append(
        ObjectEvent(
            bucket=bucket,
            key=key,
            size=parse_size(obj.get("size"), "detail.object.size"),
            etag=clean_etag(optional_str(obj, "etag")),
            version_id=optional_str(obj, "version-id"),
            sequencer=optional_str(obj, "sequencer"),
            event_name=f"EventBridge:{kind}",
        )
    )
    return result


class AwsNormalizer:
    """SQS message bodies from S3 (direct), SNS or EventBridge."""

    name = "aws"

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult:
        return guarded(lambda b: parse_payload(load_json(b)), body)
