"""Settings of the enforce role (section ``enforce``).

Environment variables nest with ``__``: ``PICTGUARD_ENFORCE__ON_FLAG_NSFW=delete``,
``PICTGUARD_ENFORCE__GUARD__MAX_DESTRUCTIVE_PER_MINUTE=50``. Notification channels are a
list, so in the environment they are one JSON value:
``PICTGUARD_ENFORCE__NOTIFY__CHANNELS='[{"type": "matrix", ...}]'``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from enforce.platform.settings import PlatformSettings
from enforce.review.settings import ReviewSettings
from pipeline.events import ActionType, Decision
from pipeline.policy import ActionPolicy
from pipeline.settings import SharedConfig, StrongSecret

PolicyAction = Literal["report", "delete", "quarantine"]


class Severity(StrEnum):
    """How urgent a notification is; channels drop what is below their ``min_severity``."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order for comparisons: info < warning < critical."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class _Section(BaseModel):
    # A misspelt key must stop start-up instead of being ignored.
    model_config = ConfigDict(extra="forbid")


class GuardSettings(_Section):
    """The blast-radius guard: pauses destructive actions when they come too fast.

    A misbehaving model (or a policy typo) must not wipe a bucket. When a limit trips,
    deletes and quarantines are held (outcome ``held``), one alert goes out, and nothing
    destructive happens until an admin runs ``pictguard enforce resume``.
    """

    enabled: bool = Field(True, description="Turn the guard off only for a supervised backfill")
    max_destructive_per_minute: int = Field(
        20, ge=1, description="Deletes + quarantines allowed in any sliding 60 s"
    )
    max_destructive_per_hour: int = Field(
        200, ge=1, description="Deletes + quarantines allowed in any sliding 3600 s"
    )
    ratio_window: int = Field(
        200, ge=1, description="How many recent object verdicts the flagged ratio looks at"
    )
    max_flagged_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Trip when more than this share of the window would be deleted/quarantined",
    )
    min_verdicts: int = Field(
        50, ge=1, description="The ratio is judged only once the window holds this many verdicts"
    )
    max_destructive_before_ratio: int = Field(
        10,
        ge=0,
        description="Deletes + quarantines allowed while the ratio window holds fewer than "
        "min_verdicts verdicts (a fresh install, after a resume); one more trips the guard",
    )


class _Channel(_Section):
    name: str | None = Field(None, description="Shown in logs; defaults to the channel type")
    min_severity: Severity = Field(
        Severity.WARNING, description="info | warning | critical: drop less urgent messages"
    )
    digest_interval_s: float = Field(
        60.0,
        ge=0,
        description="At most one message per interval; what arrives meanwhile becomes a digest",
    )
    timeout_s: float = Field(10.0, gt=0, description="Per delivery attempt")
    max_attempts: int = Field(5, ge=1, description="Delivery attempts before giving up")
    retry_initial_s: float = Field(1.0, ge=0, description="First back-off; doubles each retry")
    retry_max_s: float = Field(60.0, ge=0, description="Longest back-off between attempts")

    @property
    def label(self) -> str:
        """The channel's name in logs."""
        return self.name or str(getattr(self, "type", "channel"))


class WebhookChannel(_Channel):
    """Generic JSON webhook, signed with HMAC-SHA256 (header ``X-Pictguard-Signature``)."""

    type: Literal["webhook"] = Field("webhook", description="Which kind of channel this entry is")
    # repr=False: a webhook URL or header often carries a token; the logs redact them.
    url: str = Field(repr=False, description="The webhook URL the channel posts to")
    secret: StrongSecret = Field(
        None,
        description="HMAC key (at least 16 characters); the receiver recomputes the "
        "signature over the timestamp and the raw body",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers", repr=False
    )


class MatrixChannel(_Channel):
    """A message into a Matrix room through the client-server API."""

    type: Literal["matrix"] = Field("matrix", description="Which kind of channel this entry is")
    homeserver: str = Field(description="Base URL, e.g. https://matrix.example.org")
    room_id: str = Field(description="Room id like !abc123:example.org (not an alias)")
    access_token: SecretStr = Field(description="Access token of the bot account in the room")


class SlackChannel(_Channel):
    """A Slack (or Mattermost, Rocket.Chat) incoming webhook: ``{"text": ...}``."""

    type: Literal["slack"] = Field("slack", description="Which kind of channel this entry is")
    url: str = Field(repr=False, description="The webhook URL the channel posts to")


class DiscordChannel(_Channel):
    """A Discord channel webhook: ``{"content": ...}``."""

    type: Literal["discord"] = Field("discord", description="Which kind of channel this entry is")
    url: str = Field(repr=False, description="The webhook URL the channel posts to")


class EmailChannel(_Channel):
    """Email over SMTP (STARTTLS by default, implicit TLS with ``ssl: true``)."""

    type: Literal["email"] = Field("email", description="Which kind of channel this entry is")
    host: str = Field(description="SMTP server")
    port: int = Field(
        587, ge=1, le=65535, description="SMTP port (587 with STARTTLS, 465 with `ssl`)"
    )
    username: str | None = Field(None, description="SMTP login; unset: no login")
    password: SecretStr | None = Field(None, description="SMTP password")
    starttls: bool = Field(True, description="Upgrade with STARTTLS (ignored when ssl is true)")
    ssl: bool = Field(False, description="Implicit TLS (usually port 465)")
    sender: str = Field(description="From address")
    recipients: list[str] = Field(min_length=1, description="To addresses")
    subject_prefix: str = Field("[pictguard]", description="Start of every subject line")


Channel = Annotated[
    WebhookChannel | MatrixChannel | SlackChannel | DiscordChannel | EmailChannel,
    Field(discriminator="type"),
]


class NotifySettings(_Section):
    """Where admins hear about actions. Messages never carry image bytes."""

    channels: list[Channel] = Field(
        default_factory=list, description="Notification channels; see the channel tables below"
    )
    instance: str = Field("pictguard", description="Names this instance in every message")
    include_links: bool = Field(
        False, description="Add a link built from link_template to each message (off: no URLs)"
    )
    link_template: str | None = Field(
        None,
        description="e.g. https://admin.example.org/media/{bucket}/{key}; fields: bucket, key, "
        "object, verdict_id, quarantine",
    )
    unverified_interval_s: float = Field(
        900.0,
        gt=0,
        description="Uploads accepted without a verdict (api.on_timeout/on_error/video/"
        "on_overload: accept) make one warning per interval with their count and reasons; "
        "the first after a quiet interval goes out at once",
    )


class EnforceSettings(_Section):
    """What to do per decision, where quarantined objects go, guard and notifications."""

    dry_run: bool = Field(False, description="Report only: never delete or move anything")
    on_flag_csam: PolicyAction = Field("quarantine", description="Action for `flag_csam` verdicts")
    on_flag_nsfw: PolicyAction = Field("report", description="Action for `flag_nsfw` verdicts")
    on_error: PolicyAction = Field(
        "report", description="Action for `error` verdicts (undecodable, too large, fetch failed…)"
    )
    quarantine: str | None = Field(
        None,
        description="Where quarantined objects go: s3://bucket/prefix/ (a private bucket), a "
        "folder path, or a bare prefix inside each scanned bucket (only where that bucket is "
        "private). Unset: the private folder quarantine/ under storage.state_dir",
    )
    quarantine_retention_days: int = Field(
        365,
        ge=0,
        description="Keep quarantined copies and rejected uploads at least this long (US law, "
        "18 U.S.C. § 2258A(h), asks 1 year for reported content; check your jurisdiction). "
        "Set as S3 object-lock retention where the bucket has object lock; start-up warns "
        "below 90",
    )
    quarantine_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        "GOVERNANCE", description="S3 object-lock mode of the retention"
    )
    upload_evidence: str | None = Field(
        None,
        description="Where rejected pict-rs uploads are kept (s3://bucket/prefix/ or a folder); "
        "unset: `uploads/` in the quarantine location when it is a bucket or folder of its "
        "own, else the folder `evidence` in storage.state_dir",
    )
    quarantine_recheck_s: float = Field(
        60.0,
        ge=0,
        description="While quarantining, check again this often that the quarantine location "
        "is not publicly readable (0: before every move)",
    )
    concurrency: int = Field(16, gt=0, description="Actions performed at once")
    guard: GuardSettings = Field(default_factory=GuardSettings)  # type: ignore[arg-type]
    notify: NotifySettings = Field(default_factory=NotifySettings)  # type: ignore[arg-type]
    platform: PlatformSettings = Field(default_factory=PlatformSettings)  # type: ignore[arg-type]
    admin_token: StrongSecret = Field(
        None,
        description="Bearer token of the admin endpoints (at least 16 characters); unset "
        "disables them",
    )
    admin_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Distributed mode: how long an API replica waits for the enforce role to "
        "run an admin request (a block hashes the image first) before answering 503",
    )
    review: ReviewSettings = Field(default_factory=ReviewSettings)  # type: ignore[arg-type]

    @field_validator("quarantine")
    @classmethod
    def _quarantine_or_default(cls, value: str | None) -> str | None:
        # Empty means unset: the private folder under storage.state_dir.
        return (value.strip() or None) if value is not None else None

    @property
    def quarantines(self) -> bool:
        """Whether a live run moves objects into quarantine (some decision's action)."""
        actions = (self.on_flag_csam, self.on_flag_nsfw, self.on_error)
        return not self.dry_run and "quarantine" in actions

    def action_policy(self) -> ActionPolicy:
        """The decision → action policy these settings describe, for every role that needs it."""
        return ActionPolicy(
            {
                Decision.FLAG_CSAM: ActionType(self.on_flag_csam),
                Decision.FLAG_NSFW: ActionType(self.on_flag_nsfw),
                Decision.ERROR: ActionType(self.on_error),
            },
            dry_run=self.dry_run,
        )


class EnforceConfig(SharedConfig, Protocol):
    """What the enforce role reads of the whole configuration."""

    @property
    def enforce(self) -> EnforceSettings: ...
