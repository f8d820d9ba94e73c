"""The topics pictguard uses (short names; the prefix comes from ``kafka.topic_prefix``)."""

from __future__ import annotations

from dataclasses import dataclass, field

BUCKET_EVENTS = "bucket-events"
SCAN_BULK = "scan-requests.bulk"
SCAN_SYNC = "scan-requests.sync"
VERDICTS = "verdicts"
ACTIONS = "actions"
HASHLISTS = "hashlists"
VERDICT_CACHE = "verdict-cache"
DEAD_LETTER = "dead-letter"
# Per-replica reply topics of the validate API: ``replies.<replica id>``.
REPLIES = "replies."
OBJECT_VERDICTS = "object-verdicts"


# The largest sync scan request (a 40 MiB upload, base64 in JSON, plus its envelope).
SYNC_MAX_BYTES = 64 * 1024 * 1024


def inline_record_bytes(body_bytes: int) -> int:
    """Size on the wire of a sync scan request carrying ``body_bytes`` of upload."""
    return (body_bytes + 2) // 3 * 4 + 64 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(BUCKET_EVENTS),
    TopicSpec(SCAN_BULK),
    # Sync requests carry the upload inline and are worthless after their deadline: large
    # records allowed (brokers default to 1 MB), kept briefly.
    TopicSpec(
        SCAN_SYNC,
        configs={"retention.ms": str(3600 * 1000), "max.message.bytes": str(SYNC_MAX_BYTES)},
    ),
    TopicSpec(VERDICTS),
    TopicSpec(ACTIONS),
    TopicSpec(HASHLISTS, compacted=True),
    TopicSpec(VERDICT_CACHE, compacted=True),
    TopicSpec(DEAD_LETTER),
    # Latest verdict per object id, kept by ingest for reconciliation (distributed mode).
    TopicSpec(OBJECT_VERDICTS, compacted=True),
)

TABLE_TOPICS = tuple(t.name for t in TOPICS if t.compacted)

# A reply topic has one reader and holds answers nobody needs after a few seconds.
REPLY_TOPIC = TopicSpec(REPLIES, configs={"retention.ms": str(3600 * 1000)})


def spec_for(short_name: str) -> TopicSpec | None:
    """The spec of a short topic name (reply topics share one)."""
    if short_name.startswith(REPLIES):
        return REPLY_TOPIC
    return next((t for t in TOPICS if t.name == short_name), None)
