"""Event sources: one normalizer per store's notification format, plus auto-detection.

``parse(body, source=...)`` is the one entry point; each source module documents the exact
shape and key encoding it honours (PROTOCOLS.md, "S3 event notifications").
"""

from __future__ import annotations

from typing import Any, Literal

from ingest.sources import aws, ceph, minio
from ingest.sources.aws import AwsNormalizer
from ingest.sources.b2 import B2Normalizer
from ingest.sources.ceph import CephNormalizer
from ingest.sources.common import (
    EventError,
    Normalizer,
    ObjectEvent,
    ParseResult,
    Removal,
    ShapeError,
    guarded,
    load_json,
    require_dict,
    shown,
)
from ingest.sources.minio import MinioNormalizer

SourceName = Literal["auto", "minio", "ceph", "aws", "b2"]

__all__ = [
    "AutoNormalizer",
    "AwsNormalizer",
    "B2Normalizer",
    "CephNormalizer",
    "EventError",
    "MinioNormalizer",
    "Normalizer",
    "ObjectEvent",
    "ParseResult",
    "Removal",
    "SourceName",
    "normalizer",
    "parse",
]


def _by_event_source(payload: dict[str, Any]) -> str | None:
    records = payload.get("Records")
    if not isinstance(records, list):
        return None
    sources = {
        r["eventSource"]
        for r in records
        if isinstance(r, dict) and isinstance(r.get("eventSource"), str)
    }
    return sources.pop() if len(sources) == 1 else None


class AutoNormalizer:
    """The raw ``bucket-events`` topic, where MinIO and Ceph (or a bridged AWS) may publish.

    The MinIO envelope or each store's ``eventSource`` tells the formats apart; the key
    encoding differs between them, so a payload that says neither is dead-lettered rather
    than guessed at.
    """

    name = "auto"

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult:
        return guarded(self._parse, body)

    def _parse(self, body: bytes) -> ParseResult:
        payload = require_dict(load_json(body), "payload")
        if minio.is_envelope(payload):
            return minio.parse_payload(payload)
        source = _by_event_source(payload)
        if source == minio.EVENT_SOURCE:
            return minio.parse_payload(payload)
        if source == ceph.EVENT_SOURCE:
            return ceph.parse_payload(payload)
        if source == aws.EVENT_SOURCE or "Records" not in payload:
            return aws.parse_payload(payload)
        raise ShapeError(
            "unknown_shape",
            f"Records with eventSource {shown(source)}: not minio:s3, ceph:s3 or aws:s3 — set "
            "ingest.events.format to the store that publishes to this topic",
        )


_NORMALIZERS: dict[str, Normalizer] = {
    "auto": AutoNormalizer(),
    "minio": MinioNormalizer(),
    "ceph": CephNormalizer(),
    "aws": AwsNormalizer(),
    "b2": B2Normalizer(),
}


def normalizer(source: SourceName) -> Normalizer:
    """The normalizer for ``source``."""
    return _NORMALIZERS[source]


def parse(body: bytes, *, source: SourceName, message_key: bytes | None = None) -> ParseResult:
    """Decode one payload of ``source``; never raises (problems land in ``result.error``)."""
    return _NORMALIZERS[source].parse(body, message_key=message_key)
