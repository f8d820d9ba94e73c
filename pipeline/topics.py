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
# Admin operations (allow, block, restore, resume…) from the API replicas to enforce, and
# enforce's answers on a topic per replica: ``admin-replies.<replica id>``.
ADMIN_REQUESTS = "admin-requests"
ADMIN_REPLIES = "admin-replies."
# Rejected uploads on their way from the API to enforce, bytes inline.
UPLOAD_EVIDENCE = "upload-evidence"
# Counts of uploads the API accepted without a real verdict, for enforce's warning digest.
UNVERIFIED = "unverified-accepts"


# The largest sync scan request (a 40 MiB upload, base64 in JSON, plus its envelope).
SYNC_MAX_BYTES = 64 * 1024 * 1024


def inline_record_bytes(body_bytes: int) -> int:
    """Size on the wire of a sync scan request carrying ``body_bytes`` of upload."""
    return (body_bytes + 2) // 3 * 4 + 64 * 1024


# Short-lived topics: the sync lane carries every upload inline (flagged CSAM included) and
# the reply topics answer within seconds, so both keep records for an hour only. Kafka
# deletes whole segments, and only closed ones: without segment.ms the open segment of a
# quiet topic stays until the broker's default roll (7 days, or 1 GiB), uploads and all.
# With a 10-minute roll a record is gone within retention + segment.ms + the broker's
# retention check (log.retention.check.interval.ms, 5 minutes by default): ~1 h 15 min.
SHORT_RETENTION_MS = 3600 * 1000
SHORT_SEGMENT_MS = 10 * 60 * 1000
# Rejected uploads wait for enforce at most this long (enforce writes them within seconds).
EVIDENCE_RETENTION_MS = 24 * 3600 * 1000
# A segment must hold the largest record batch: twice the largest sync request.
SYNC_SEGMENT_BYTES = 2 * SYNC_MAX_BYTES
# Replies are small verdicts; small segments roll (and go) early under load too.
REPLY_SEGMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)
    # True for topics whose records must not outlive their retention by days (image bytes,
    # answers): `pictguard topics create` warns when an existing one keeps them longer.
    short_lived: bool = False


def short_lived_configs(segment_bytes: int, **extra: str) -> dict[str, str]:
    """Topic configs that keep records about an hour, not until the next 7-day roll."""
    return {
        "retention.ms": str(SHORT_RETENTION_MS),
        "segment.ms": str(SHORT_SEGMENT_MS),
        "segment.bytes": str(segment_bytes),
        **extra,
    }


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(BUCKET_EVENTS),
    TopicSpec(SCAN_BULK),
    # Sync requests carry the upload inline and are worthless after their deadline: large
    # records allowed (brokers default to 1 MB), kept briefly.
    TopicSpec(
        SCAN_SYNC,
        configs=short_lived_configs(
            SYNC_SEGMENT_BYTES, **{"max.message.bytes": str(SYNC_MAX_BYTES)}
        ),
        short_lived=True,
    ),
    TopicSpec(VERDICTS),
    TopicSpec(ACTIONS),
    TopicSpec(HASHLISTS, compacted=True),
    TopicSpec(VERDICT_CACHE, compacted=True),
    TopicSpec(DEAD_LETTER),
    # Latest verdict per object id, kept by ingest for reconciliation (distributed mode).
    TopicSpec(OBJECT_VERDICTS, compacted=True),
    # Worthless once the API stopped waiting (a minute): kept briefly.
    TopicSpec(ADMIN_REQUESTS, configs={"retention.ms": str(3600 * 1000)}),
    # Rejected uploads, bytes inline, until enforce has written them to the quarantine
    # location (seconds): a day covers an enforce outage without keeping them for a week.
    TopicSpec(
        UPLOAD_EVIDENCE,
        configs={
            "retention.ms": str(EVIDENCE_RETENTION_MS),
            "segment.ms": str(SHORT_SEGMENT_MS),
            "segment.bytes": str(SYNC_SEGMENT_BYTES),
            "max.message.bytes": str(SYNC_MAX_BYTES),
        },
    ),
    # A few small records a minute at most, and only while uploads go unverified.
    TopicSpec(UNVERIFIED),
)

TABLE_TOPICS = tuple(t.name for t in TOPICS if t.compacted)

# A reply topic has one reader and holds answers nobody needs after a few seconds.
REPLY_TOPIC = TopicSpec(REPLIES, configs=short_lived_configs(REPLY_SEGMENT_BYTES), short_lived=True)


def spec_for(short_name: str) -> TopicSpec | None:
    """The spec of a short topic name (reply topics share one)."""
    if short_name.startswith((REPLIES, ADMIN_REPLIES)):
        return REPLY_TOPIC
    return next((t for t in TOPICS if t.name == short_name), None)
