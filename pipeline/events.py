"""Event contracts shared by every role.

Every event is a pydantic model with a ``kind`` and a ``schema_version``; on the wire it is
JSON (bytes base64-encoded). Nobody builds event dicts by hand: producers call
:func:`encode` and consumers call :func:`decode`, which rejects unknown versions with an
error that says what to do.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import PictguardError

SCHEMA_VERSION = 1


def new_id() -> str:
    """A random, URL-safe identifier for requests, verdicts and actions."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchemaError(PictguardError, ValueError):
    """A message on the bus is not a valid event of the expected kind or version."""


class Lane(StrEnum):
    """Which queue a scan request travels in; classify serves ``sync`` first."""

    BULK = "bulk"
    SYNC = "sync"


class Source(StrEnum):
    """What produced a scan request."""

    BACKFILL = "backfill"
    EVENT = "event"
    RECONCILE = "reconcile"
    WATCH = "watch"
    API = "api"


class Decision(StrEnum):
    ALLOW = "allow"
    FLAG_NSFW = "flag_nsfw"
    FLAG_CSAM = "flag_csam"
    ERROR = "error"


class ErrorReason(StrEnum):
    """Why a request ended in an ``error`` verdict."""

    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    EMPTY = "empty"
    NOT_FOUND = "not_found"
    FETCH_FAILED = "fetch_failed"
    OBJECT_TOO_BIG = "object_too_big"
    MODEL_FAILED = "model_failed"
    TIMEOUT = "timeout"


class ActionType(StrEnum):
    REPORT = "report"
    DELETE = "delete"
    QUARANTINE = "quarantine"
    RESTORE = "restore"
    # Follow-ups on the platform that serves the object (enforce/platform): a pict-rs
    # purge of the image's hash, its re-import on restore, and moderation on Lemmy or
    # Mastodon (reports, removals, bans, account actions, and undoing them on restore).
    PURGE = "purge"
    REIMPORT = "reimport"
    MODERATE = "moderate"


class ActionOutcome(StrEnum):
    DONE = "done"
    DRY_RUN = "dry_run"
    ALREADY_ABSENT = "already_absent"
    DUPLICATE = "duplicate"  # the same verdict again (a replay): acted on once already
    HELD = "held"
    FAILED = "failed"
    KEPT = "kept"  # left in place: an admin restored it after its quarantine


class StoreKind(StrEnum):
    S3 = "s3"
    FILE = "file"


class ObjectRef(BaseModel):
    """Where an object lives: an S3 bucket and key, or a root folder and relative path."""

    model_config = ConfigDict(frozen=True)

    store: StoreKind
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

    @property
    def id(self) -> str:
        """Stable object id, used as the Kafka key of everything about this object."""
        if self.store is StoreKind.S3:
            return f"s3://{self.bucket}/{self.key}"
        return f"file://{self.bucket.rstrip('/')}/{self.key}"


class _Event(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", extra="ignore")

    kind: ClassVar[str]
    schema_version: int = SCHEMA_VERSION
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        raise NotImplementedError


class ScanRequest(_Event):
    """Ask classify for a verdict on one object (bulk) or one inline upload (sync)."""

    kind: ClassVar[str] = "scan_request"
    type: Literal["scan_request"] = "scan_request"
    request_id: str = Field(default_factory=new_id)
    lane: Lane = Lane.BULK
    source: Source = Source.BACKFILL
    object: ObjectRef | None = None
    content: bytes | None = None
    content_type: str | None = None
    reply_to: str | None = None
    deadline: datetime | None = None

    @property
    def key(self) -> str:
        return self.object.id if self.object else self.request_id


# How ``matched`` starts when a hash list flagged the image: a blocklist entry (local or
# from a feed) or an HMA bank.
HASH_LIST_FLAGS = ("blocklist", "hma:")


class FrameRef(BaseModel):
    """One frame of a video or an animation: where it is, and what it showed."""

    index: int = Field(description="Frame number in display order, from 0")
    time_s: float | None = Field(None, description="Presentation time from the start, seconds")
    pdq: str | None = None  # the frame's PDQ: the video's frame hashes, as vPDQ keeps them
    pdq_quality: int | None = None
    decision: Decision | None = None
    matched: str | None = None  # the hash-list entry this frame's PDQ matched


class MediaSummary(BaseModel):
    """What classification saw of a video or an animation (absent for still images).

    ``limited`` says why fewer frames were looked at than planned (the sync deadline, the
    decode time limit, data that stops short), so a verdict on a partial scan says so.
    """

    type: str  # from the bytes (``video/mp4``, ``image/gif``…), never from a header
    frames: int | None = None  # frames in the file, when known
    duration_s: float | None = None
    sampled: list[FrameRef] = Field(default_factory=list)
    flagged: list[FrameRef] = Field(default_factory=list)
    limited: str | None = None


class Findings(BaseModel):
    """What classification concluded about one image.

    The engine returns these (``classify.base.Assessment``); a :class:`Verdict` is the same
    fields plus where the request came from.
    """

    decision: Decision
    reason: ErrorReason | None = None
    detail: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    matched: str | None = None
    classifiers: list[str] = Field(default_factory=list)
    model_version: str = ""
    policy_version: str = ""
    cached: bool = False
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # Set when a remote worker classified the image (``classify.remote``): which one.
    worker: str | None = None
    # Videos and animations: the frames sampled, which of them flagged, and any limit hit.
    media: MediaSummary | None = None

    @property
    def by_hash_list(self) -> bool:
        """Whether a block entry decided this — a local list, a feed, or a bank reached
        through HMA — rather than a model's judgement alone (which a human must confirm
        before a report, and which never bans by default)."""
        return (self.matched or "").startswith(HASH_LIST_FLAGS)


class Verdict(_Event, Findings):
    """The outcome of one scan request."""

    kind: ClassVar[str] = "verdict"
    type: Literal["verdict"] = "verdict"
    verdict_id: str = Field(default_factory=new_id)
    request_id: str
    lane: Lane = Lane.BULK
    source: Source = Source.BACKFILL
    object: ObjectRef | None = None

    @property
    def key(self) -> str:
        return self.object.id if self.object else self.request_id


class EnforcementAction(_Event):
    """What enforce did (or deliberately did not do) about one verdict."""

    kind: ClassVar[str] = "action"
    type: Literal["action"] = "action"
    action_id: str = Field(default_factory=new_id)
    verdict_id: str
    object: ObjectRef | None = None
    decision: Decision
    action: ActionType
    outcome: ActionOutcome
    dry_run: bool = False
    detail: str | None = None
    quarantine: ObjectRef | None = None
    sha256: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    # An ``error`` verdict's reason (unscannable content is worth a warning, a vanished
    # object is not).
    reason: ErrorReason | None = None
    # For purge/reimport/moderate: what the step touched on the platform (``system``,
    # ``phase``, per-step ids such as the pict-rs hash and aliases, Lemmy post/comment/
    # person/report ids, Mastodon account/status/report ids) and ``links`` to the
    # platform's own moderation pages. Never image bytes or image URLs.
    platform: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.object.id if self.object else self.verdict_id


class UploadEvidence(_Event):
    """The bytes of an upload the API rejected, for enforce to keep as evidence.

    pict-rs stores nothing it was told to reject, so the API hands the upload to enforce
    (topic ``upload-evidence``), which writes it to the quarantine location with the
    verdict, as it would quarantine a bucket object.
    """

    kind: ClassVar[str] = "upload_evidence"
    type: Literal["upload_evidence"] = "upload_evidence"
    verdict: Verdict
    content: bytes
    content_type: str | None = None
    client_id: str | None = None
    # What the platform said about the upload (uploader, post…), when it said anything.
    context: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.verdict.request_id


class DeadLetter(_Event):
    """A message that could not be processed, with the reason, kept for an admin."""

    kind: ClassVar[str] = "dead_letter"
    type: Literal["dead_letter"] = "dead_letter"
    source_topic: str
    source_key: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str
    detail: str = ""
    payload: bytes = b""

    @property
    def key(self) -> str:
        return self.source_key or f"{self.source_topic}:{self.partition}:{self.offset}"


UnverifiedReason = Literal["timeout", "unavailable", "overload", "error", "video"]


class UnverifiedAccepts(_Event):
    """Uploads the validate API let through without a real verdict, counted per reason.

    One record per API replica every few seconds while it happens (never one per upload);
    enforce turns them into a warning digest on the admins' channels. The reasons:
    ``timeout`` (no verdict by ``api.deadline_s``), ``unavailable`` (broker or classify
    unreachable), ``overload`` (above ``api.max_inflight`` with ``api.on_overload:
    accept``), ``error`` (could not classify, ``api.on_error: accept``) and ``video``
    (``api.video: accept``).
    """

    kind: ClassVar[str] = "unverified_accepts"
    type: Literal["unverified_accepts"] = "unverified_accepts"
    report_id: str = Field(default_factory=new_id)
    replica: str
    counts: dict[UnverifiedReason, int]
    # The latest detail per reason ("no verdict within 8 s"), for the admins' message.
    details: dict[UnverifiedReason, str] = Field(default_factory=dict)
    first_at: datetime
    last_at: datetime

    @property
    def key(self) -> str:
        return self.replica


AdminOperation = Literal["status", "resume", "allow", "block", "restore", "audit"]


class AdminRequest(_Event):
    """An admin operation the API asks the enforce role to run (distributed mode).

    The API replica waits for the :class:`AdminReply` on ``reply_to`` until ``deadline``;
    enforce skips a request whose deadline has passed (nobody waits for it any more).
    """

    kind: ClassVar[str] = "admin_request"
    type: Literal["admin_request"] = "admin_request"
    request_id: str = Field(default_factory=new_id)
    operation: AdminOperation
    arguments: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    reply_to: str
    deadline: datetime

    @property
    def key(self) -> str:
        return self.request_id


class AdminReply(_Event):
    """What enforce answers to an :class:`AdminRequest`: a result, or an error and its kind."""

    kind: ClassVar[str] = "admin_reply"
    type: Literal["admin_reply"] = "admin_reply"
    request_id: str
    error: Literal["not_found", "invalid", "storage", "internal"] | None = None
    message: str = ""
    result: Any = None

    @property
    def key(self) -> str:
        return self.request_id


Event = (
    ScanRequest
    | Verdict
    | EnforcementAction
    | DeadLetter
    | AdminRequest
    | AdminReply
    | UploadEvidence
    | UnverifiedAccepts
)
E = TypeVar("E", bound=_Event)


def encode(event: _Event) -> bytes:
    """Serialise an event to its JSON wire form."""
    return event.model_dump_json(exclude_none=True).encode()


def decode(data: bytes, model: type[E]) -> E:
    """Parse ``data`` as an event of type ``model``.

    Raises :class:`SchemaError` with an actionable message for malformed JSON, the wrong
    kind, or a schema version this build does not understand.
    """
    import json

    try:
        raw: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"not JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise SchemaError(f"expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{model.kind} schema_version {version!r} is not supported (this pictguard reads "
            f"version {SCHEMA_VERSION}); run the same pictguard version on every role"
        )
    kind = raw.get("type")
    if kind != model.kind:
        raise SchemaError(f"expected a {model.kind} event, got type {kind!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise SchemaError(f"invalid {model.kind}: {where}: {first['msg']}") from None
