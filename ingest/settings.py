"""Settings of the ingest role (section ``ingest``).

Environment variables nest with ``__``: ``PICTGUARD_INGEST__PRESET=mastodon``,
``PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN=...``, ``PICTGUARD_INGEST__SQS__QUEUE_URL=...``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.settings import SharedConfig, StrongSecret

Preset = Literal["none", "pictrs", "mastodon", "misskey"]


class EventsSettings(BaseModel):
    """The raw ``bucket-events`` topic that MinIO and Ceph Kafka targets publish to."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="Consume the bucket-events topic (distributed mode)"
    )
    format: Literal["auto", "minio", "ceph", "aws"] = Field(
        default="auto",
        description="Notification format on the topic; auto tells MinIO/Ceph/AWS apart",
    )
    max_batch: int = Field(default=1000, gt=0, description="Raw events handled per produce call")


class WebhookSettings(BaseModel):
    """HTTP receiver for MinIO webhook targets, Ceph HTTP push endpoints and B2 webhooks.

    An endpoint answers only once its secret is set: ``/hooks/minio`` needs
    ``minio_token``, ``/hooks/ceph`` needs ``ceph_token``, ``/hooks/b2`` needs ``b2_secret``.
    An empty value means unset (the endpoint stays off); one shorter than 16 characters
    stops start-up.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Run the HTTP receiver for bucket notifications")
    host: str = Field("0.0.0.0", description="Address the receiver listens on")
    port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port of `/hooks/minio`, `/hooks/ceph`, `/hooks/b2`",
    )
    minio_token: StrongSecret = Field(
        default=None,
        description="MinIO notify_webhook auth_token; sent as Authorization: Bearer <token>",
    )
    ceph_token: StrongSecret = Field(
        default=None, description="Token Ceph sends as ?token=... in its push-endpoint URL"
    )
    b2_secret: StrongSecret = Field(
        default=None, description="B2 event notification rule signing secret (HMAC-SHA256)"
    )
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="Larger bodies get 413")
    b2_max_age_s: float = Field(
        default=900.0,
        gt=0,
        description="B2 events whose eventTimestamp is further than this from now (either way) "
        "are refused as replays, and an eventId seen within it is a repeat; the reconcile "
        "listing catches an event B2 delivered later than this",
    )


class SqsSettings(BaseModel):
    """AWS SQS queue that S3 (directly, through SNS or through EventBridge) notifies."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Poll an SQS queue for S3 notifications")
    queue_url: str | None = Field(None, description="The queue URL")
    region: str | None = Field(default=None, description="Default: s3.region")
    endpoint_url: str | None = Field(
        default=None, description="Only for SQS-compatible test servers"
    )
    access_key_id: str | None = Field(
        default=None, description="Default: s3 credentials / AWS chain"
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Default: s3 credentials / AWS chain"
    )
    session_token: SecretStr | None = Field(None, description="Default: s3 credentials / AWS chain")
    wait_time_s: int = Field(
        default=20, ge=0, le=20, description="Long-polling wait per receive call"
    )
    max_messages: int = Field(default=10, ge=1, le=10, description="Messages per receive call")
    visibility_timeout_s: int | None = Field(
        default=None,
        ge=0,
        description="Override the queue's visibility timeout for received messages",
    )


class WatchSettings(BaseModel):
    """Filesystem watcher for local media folders (pict-rs files, Mastodon, Misskey)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Watch local folders for new files")
    roots: list[Path] = Field(default_factory=list, description="Folders to watch, recursively")
    settle_s: float = Field(
        default=2.0, gt=0, description="A file counts as written once unchanged for this long"
    )
    force_polling: bool = Field(
        default=False, description="Poll instead of inotify (NFS, some mounts)"
    )
    poll_delay_ms: int = Field(default=300, gt=0, description="Poll interval with `force_polling`")


class ReconcileSettings(BaseModel):
    """Periodic listing that catches lost events; the only source for Garage and SeaweedFS."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Run reconciliation every `interval_s` inside the ingest role"
    )
    locations: list[str] = Field(
        default_factory=list, description="s3://bucket[/prefix] or folders to reconcile"
    )
    interval_s: float = Field(default=3600.0, gt=0, description="Time between reconcile runs")
    overlap_s: float = Field(
        default=900.0,
        ge=0,
        description="Look this far before the last checkpoint (clock skew, races)",
    )
    min_age_s: float = Field(
        default=120.0, ge=0, description="Leave objects younger than this to the event path"
    )
    initial_lookback_s: float | None = Field(
        default=None, gt=0, description="First run: how far back to look; unset means every object"
    )
    retry_errors: bool = Field(
        default=True,
        description="Rescan objects whose verdict was a transient error (fetch, timeout)",
    )


class BackfillSettings(BaseModel):
    """How a backfill lists: in parallel, paced, from a date, with an ETA."""

    model_config = ConfigDict(extra="forbid")

    prefixes: list[str] = Field(
        default_factory=list,
        description="List these prefixes (inside the target) in parallel, each with its own "
        "checkpoint; empty means the whole target as one listing",
    )
    parallel: int = Field(default=4, ge=1, description="Prefixes listed at the same time")
    rate_limit: float | None = Field(
        default=None, gt=0, description="At most this many objects per second; unset: no limit"
    )
    since: datetime | None = Field(
        default=None, description="Only objects modified at or after this time (UTC if no zone)"
    )
    estimate_total: bool = Field(
        default=True, description="Count ahead (a keys-only listing) for the total and the ETA"
    )


class IngestSettings(BaseModel):
    """Which objects become scan requests, and how fast."""

    model_config = ConfigDict(extra="forbid")

    include_prefixes: list[str] = Field(
        default_factory=list, description="Only keys under these prefixes; empty means all"
    )
    exclude_prefixes: list[str] = Field(
        default_factory=list,
        description="Skip keys under these prefixes (e.g. your quarantine prefix)",
    )
    extensions: list[str] = Field(
        default_factory=list,
        description="Only keys with these extensions (e.g. ['.jpg', '.png']); empty means all",
    )
    exclude_extensions: list[str] = Field(
        default_factory=list, description="Skip keys with these extensions"
    )
    exclude_name_prefixes: list[str] = Field(
        default_factory=list,
        description="Skip files whose name (last key segment) starts with one of these",
    )
    content_types: list[str] = Field(
        default_factory=list,
        description="Only these content types (prefixes such as 'image/'), where an event "
        "says the type; empty means all",
    )
    exclude_content_types: list[str] = Field(
        default_factory=list, description="Skip these content types, where an event says the type"
    )
    max_size_bytes: int | None = Field(
        default=None, gt=0, description="Skip objects larger than this; unset means no cap"
    )
    preset: Preset = Field(
        default="none",
        description="Storage layout preset: pictrs, mastodon, misskey (adds filters)",
    )
    mastodon_media: Literal["all", "local", "remote"] = Field(
        default="all",
        description="Mastodon preset: local uploads, remote media under cache/, or both",
    )
    misskey_webpublic: bool = Field(
        default=False,
        description="Misskey preset: also scan webpublic- copies (re-encoded originals)",
    )
    checkpoint_every: int = Field(
        default=500, gt=0, description="Objects between backfill checkpoints"
    )
    batch_size: int = Field(default=256, gt=0, description="Scan requests produced per bus call")
    dedupe_window_s: float = Field(
        default=600.0,
        ge=0,
        description="Repeated notifications of one object within this are dropped",
    )
    dedupe_max_entries: int = Field(default=100_000, gt=0, description="Memory bound of the window")
    events: EventsSettings = Field(default_factory=EventsSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    sqs: SqsSettings = Field(default_factory=SqsSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)


class IngestConfig(SharedConfig, Protocol):
    """What the ingest role reads of the whole configuration."""

    @property
    def ingest(self) -> IngestSettings: ...
