"""Settings of the platform follow-ups (section ``enforce.platform``): all off by default.

- ``enforce.platform.pictrs``: purge a flagged image from pict-rs (every alias, variant and
  database row), re-import it on restore.
- ``enforce.platform.lemmy``: find who uploaded it and which posts and comments use it,
  then report, remove, purge or ban as the per-decision policy says.
- ``enforce.platform.mastodon``: find the media attachment's status and account (through
  ``tootctl media lookup``), report it, and apply an optional account action.

Secrets (``api_key``, ``password``, ``jwt``, ``token``) are ``SecretStr``: never logged,
redacted from every log line; set them in the environment
(``PICTGUARD_ENFORCE__PLATFORM__PICTRS__API_KEY``…).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pipeline.events import Decision

LemmyStep = Literal["report", "remove", "purge", "ban"]
MastodonStep = Literal["report", "sensitive", "silence", "disable", "suspend"]
MASTODON_ACCOUNT_ACTIONS = ("sensitive", "silence", "disable", "suspend")


class _Section(BaseModel):
    # A misspelt key must stop start-up instead of being ignored.
    model_config = ConfigDict(extra="forbid")


def _lemmy_report() -> list[LemmyStep]:
    return ["report"]


def _mastodon_report() -> list[MastodonStep]:
    return ["report"]


def _base_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} must be an http:// or https:// URL")
    return value


class PictrsSettings(_Section):
    """pict-rs's internal API: purge a flagged image for good, re-import it on restore.

    Needs pict-rs's ``server.api_key`` (``PICTRS__SERVER__API_KEY``), sent as
    ``X-Api-Token``. Unset ``url``: pictguard stops at the storage layer.
    """

    url: str | None = Field(
        None, description="pict-rs base URL, e.g. http://pictrs:8080; unset: no pict-rs cleanup"
    )
    api_key: SecretStr | None = Field(
        None, description="pict-rs `server.api_key`, sent as X-Api-Token (secret)"
    )
    locations: list[str] = Field(
        default_factory=list,
        description="Where pict-rs keeps its files as pictguard names them: s3://bucket or the "
        "files folder; flagged objects there are looked up in pict-rs and purged",
    )
    purge: bool = Field(
        True,
        description="Purge the flagged image's hash (every alias, variant and row) after it is "
        "quarantined or deleted",
    )
    reimport_on_restore: bool = Field(
        True,
        description="On restore/allow, re-import the restored file under its old aliases "
        "(POST /internal/import) and remove the restored copy pict-rs no longer knows",
    )
    page_size: int = Field(
        500, ge=1, le=10_000, description="Hashes per /internal/hashes page (sha256 index)"
    )
    timeout_s: float = Field(30.0, gt=0, description="Per request to pict-rs")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @model_validator(mode="after")
    def _complete(self) -> PictrsSettings:
        if self.url and self.api_key is None:
            raise ValueError(
                "pict-rs cleanup needs the api key: set enforce.platform.pictrs.api_key "
                "(PICTGUARD_ENFORCE__PLATFORM__PICTRS__API_KEY) to pict-rs's server.api_key"
            )
        if self.url and not self.locations:
            raise ValueError(
                "name pict-rs's bucket or files folder in enforce.platform.pictrs.locations "
                "(e.g. [s3://pictrs-media]) so pictguard knows which objects are pict-rs's"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether the pict-rs integration is configured."""
        return self.url is not None


class LemmySettings(_Section):
    """Lemmy moderation with an admin account: uploader, posts and comments of an image.

    Per decision, a list of steps: ``report`` (a report on every post and comment that
    uses the image, seen by the community's moderators and the instance admins),
    ``remove`` (remove them), ``purge`` (purge them), ``ban`` (ban the uploader). Removing,
    purging and banning follow only a quarantine or delete (the storage policy is the
    master switch for anything destructive).
    """

    url: str | None = Field(
        None, description="Lemmy's API base, e.g. http://lemmy:8536; unset: no Lemmy moderation"
    )
    public_url: str | None = Field(
        None,
        description="Lemmy's public address, as post URLs and moderation links use it "
        "(https://lemmy.example); default: url",
    )
    username: str | None = Field(None, description="Admin account to log in with")
    password: SecretStr | None = Field(None, description="Its password (secret)")
    jwt: SecretStr | None = Field(
        None, description="Or a login token (JWT) of the admin account, instead of a password"
    )
    on_flag_csam: list[LemmyStep] = Field(
        default_factory=_lemmy_report,
        description="Steps for flag_csam: report, remove, purge, ban",
    )
    on_flag_nsfw: list[LemmyStep] = Field(
        default_factory=_lemmy_report,
        description="Steps for flag_nsfw: report, remove, purge, ban",
    )
    on_error: list[LemmyStep] = Field(
        default_factory=list, description="Steps for error verdicts (normally none)"
    )
    ban_model_only: bool = Field(
        False,
        description="Also ban on a verdict of the models alone; off: `ban` only for hash-list "
        "matches",
    )
    ban_remove_data: bool = Field(
        False,
        description="Ban with remove_data (removes all their posts, comments and uploads; "
        "cannot be undone by restore)",
    )
    ban_days: int | None = Field(None, ge=1, description="Ban length in days; unset: permanent")
    search_pages: int = Field(
        4, ge=1, le=100, description="Pages of 50 search results read per search"
    )
    timeout_s: float = Field(15.0, gt=0, description="Per request to Lemmy")

    @field_validator("url", "public_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @model_validator(mode="after")
    def _complete(self) -> LemmySettings:
        if self.url and self.jwt is None and not (self.username and self.password):
            raise ValueError(
                "Lemmy moderation needs an admin account: set enforce.platform.lemmy.username "
                "and password (PICTGUARD_ENFORCE__PLATFORM__LEMMY__PASSWORD), or jwt"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether the Lemmy integration is configured."""
        return self.url is not None

    @property
    def site(self) -> str:
        """Lemmy's public address."""
        return self.public_url or self.url or ""

    def steps(self, decision: Decision) -> list[LemmyStep]:
        """The configured steps for ``decision`` (none for ``allow``)."""
        return {
            Decision.FLAG_CSAM: self.on_flag_csam,
            Decision.FLAG_NSFW: self.on_flag_nsfw,
            Decision.ERROR: self.on_error,
        }.get(decision, [])


class MastodonSettings(_Section):
    """Mastodon: report a flagged media attachment's status and account, act on the account.

    Mastodon has no HTTP API from a media attachment to its status: pictguard runs
    ``tootctl media lookup <url>`` (the ``tootctl`` command prefix below) where it can, then
    uses the API with a staff account's token (scopes ``write:reports``,
    ``admin:read:accounts``, ``admin:write:accounts``, ``admin:write:reports``).
    """

    url: str | None = Field(
        None, description="Mastodon's address, e.g. https://mastodon.example; unset: off"
    )
    token: SecretStr | None = Field(
        None, description="Access token of a staff account (see the scopes in the README)"
    )
    locations: list[str] = Field(
        default_factory=list,
        description="Mastodon's media bucket or public/system folder as pictguard names it",
    )
    tootctl: list[str] = Field(
        default_factory=lambda: ["tootctl"],
        description="Command that runs tootctl, e.g. [docker, exec, mastodon-web-1, tootctl]; "
        "pictguard appends `media lookup <url>`",
    )
    tootctl_timeout_s: float = Field(
        180.0, gt=0, description="tootctl boots Rails: allow it minutes"
    )
    on_flag_csam: list[MastodonStep] = Field(
        default_factory=_mastodon_report,
        description="Steps for flag_csam: report plus at most one account action (sensitive, "
        "silence, disable, suspend)",
    )
    on_flag_nsfw: list[MastodonStep] = Field(
        default_factory=_mastodon_report, description="Steps for flag_nsfw (as on_flag_csam)"
    )
    on_error: list[MastodonStep] = Field(
        default_factory=list, description="Steps for error verdicts (normally none)"
    )
    account_action_model_only: bool = Field(
        False,
        description="Also take the account action on a verdict of the models alone; off: only "
        "for hash-list matches",
    )
    forward_remote: bool = Field(
        False, description="Forward reports about remote accounts to their instance"
    )
    notify_account: bool = Field(
        False, description="Email the account about the action (send_email_notification)"
    )
    timeout_s: float = Field(15.0, gt=0, description="Per request to Mastodon")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @field_validator("on_flag_csam", "on_flag_nsfw", "on_error")
    @classmethod
    def _one_account_action(cls, value: list[MastodonStep]) -> list[MastodonStep]:
        actions = [s for s in value if s in MASTODON_ACCOUNT_ACTIONS]
        if len(actions) > 1:
            raise ValueError(f"at most one account action per decision, got {actions}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> MastodonSettings:
        if self.url and self.token is None:
            raise ValueError(
                "Mastodon moderation needs a staff account's token: set "
                "enforce.platform.mastodon.token (PICTGUARD_ENFORCE__PLATFORM__MASTODON__TOKEN)"
            )
        if self.url and not self.locations:
            raise ValueError(
                "name Mastodon's media bucket or public/system folder in "
                "enforce.platform.mastodon.locations"
            )
        if self.url and not self.tootctl:
            raise ValueError("enforce.platform.mastodon.tootctl must name a command")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the Mastodon integration is configured."""
        return self.url is not None

    def steps(self, decision: Decision) -> list[MastodonStep]:
        """The configured steps for ``decision`` (none for ``allow``)."""
        return {
            Decision.FLAG_CSAM: self.on_flag_csam,
            Decision.FLAG_NSFW: self.on_flag_nsfw,
            Decision.ERROR: self.on_error,
        }.get(decision, [])


class PlatformSettings(_Section):
    """What happens on pict-rs, Lemmy and Mastodon after a flag; every part off by default."""

    pictrs: PictrsSettings = Field(default_factory=PictrsSettings)  # type: ignore[arg-type]
    lemmy: LemmySettings = Field(default_factory=LemmySettings)  # type: ignore[arg-type]
    mastodon: MastodonSettings = Field(default_factory=MastodonSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _lemmy_needs_pictrs(self) -> PlatformSettings:
        if self.lemmy.enabled and not self.pictrs.enabled:
            raise ValueError(
                "Lemmy moderation finds an image's posts through its pict-rs aliases: configure "
                "enforce.platform.pictrs (url, api_key, locations) as well"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether any integration is configured."""
        return self.pictrs.enabled or self.lemmy.enabled or self.mastodon.enabled
