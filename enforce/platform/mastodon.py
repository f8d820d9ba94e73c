"""Mastodon 4.x: from a flagged media file to its status and account, then report and act.

Mastodon keeps media at ``[cache/]media_attachments/files/<id in 3-digit groups>/<style>/
<name>`` (avatars and headers under ``accounts/``). The key gives the attachment id, but
Mastodon has **no HTTP API** from an attachment to its status; ``tootctl media lookup
<url>`` on the Mastodon host does it (it prints the status's URL, or the account's for an
avatar). pictguard runs it through a :data:`Runner` — by default the configured command
(``enforce.platform.mastodon.tootctl``, e.g. ``docker exec mastodon-web-1 tootctl``) — then
finds the account with the admin API, reports it (``POST /api/v1/reports``) and takes the
optional account action (``POST /api/v1/admin/accounts/:id/action``).

tootctl reads only the URL's path and drops its first segment (``/system/`` for filesystem
storage, the bucket for path-style S3), so pictguard builds ``{url}/system/<key>`` itself,
whatever host serves the media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from enforce.platform.http import JsonApi, PlatformError, json_of
from enforce.platform.settings import MastodonSettings

log = logging.getLogger(__name__)

SYSTEM = "Mastodon"
Runner = Callable[[str], Awaitable[tuple[int, str]]]
"""Runs ``tootctl media lookup <url>``: (exit status, what it printed)."""

UNDO = {
    "sensitive": "unsensitive",
    "silence": "unsilence",
    "suspend": "unsuspend",
    "disable": "enable",
}
_MEDIA_KEY = re.compile(
    r"^(?:cache/)?(?P<table>[a-z_]+)/(?P<attachment>[a-z_]+)/(?P<partition>(?:\d{3}/){2,}\d{3})/"
    r"(?P<style>[a-z_]+)/(?P<file>[^/]+)$"
)
_STATUS_PATH = (
    re.compile(r"^/@(?P<user>[^/@]+)(?:@[^/]+)?/(?P<id>\d+)/?$"),
    re.compile(r"^/users/(?P<user>[^/]+)/statuses/(?P<id>[^/]+)/?$"),
    re.compile(r"^/notes/(?P<id>[^/]+)$"),
)
_ACCOUNT_PATH = (
    re.compile(r"^/@(?P<user>[^/@]+)/?$"),
    re.compile(r"^/users/(?P<user>[^/]+)/?$"),
)


@dataclass(frozen=True, slots=True)
class MediaKey:
    """What a storage key says: the record's table, id and style, and whether it is remote."""

    table: str
    record_id: int
    style: str
    remote: bool


def parse_media_key(key: str) -> MediaKey | None:
    """Parse ``[cache/]media_attachments/files/000/000/001/original/x.png`` (None if not)."""
    match = _MEDIA_KEY.match(key.lstrip("/"))
    if match is None:
        return None
    digits = match["partition"].replace("/", "")
    return MediaKey(match["table"], int(digits), match["style"], key.startswith("cache/"))


@dataclass(frozen=True, slots=True)
class Owner:
    """Who tootctl says a media file belongs to."""

    url: str
    username: str
    domain: str | None  # None: a local account
    status_id: str | None  # the local status id (None for remote statuses and avatars)


def parse_lookup(output: str, local_domain: str) -> Owner | None:
    """Read tootctl's answer: a status URL (``https://d/@user/123``) or an account URL."""
    url = next((w for w in output.split() if w.startswith(("http://", "https://"))), None)
    if url is None:
        return None
    parts = urlsplit(url)
    domain = None if parts.netloc == local_domain else parts.netloc
    for pattern in _STATUS_PATH:
        match = pattern.match(parts.path)
        if match:
            user = match.groupdict().get("user")
            if user is None:
                return Owner(url, "", domain, None)
            return Owner(url, user, domain, match["id"] if domain is None else None)
    for pattern in _ACCOUNT_PATH:
        match = pattern.match(parts.path)
        if match:
            return Owner(url, match["user"], domain, None)
    return None


def command_runner(command: Sequence[str], timeout_s: float) -> Runner:
    """A :data:`Runner` that execs ``command media lookup <url>`` (no shell)."""

    async def run(url: str) -> tuple[int, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                "media",
                "lookup",
                url,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise PlatformError(
                f"cannot run tootctl ({' '.join(command)}): {exc.strerror or exc} — set "
                "enforce.platform.mastodon.tootctl to a command that runs tootctl (see the "
                "README: run enforce where it can exec tootctl)"
            ) from None
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise PlatformError(
                f"tootctl media lookup took longer than {timeout_s:g} s "
                "(enforce.platform.mastodon.tootctl_timeout_s)"
            ) from None
        return int(process.returncode or 0), out.decode(errors="replace").strip()

    return run


class MastodonClient:
    """Mastodon's API with a staff account's token."""

    def __init__(self, settings: MastodonSettings) -> None:
        assert settings.url is not None and settings.token is not None
        self.settings = settings
        self.domain = urlsplit(settings.url).netloc
        self.api = JsonApi(
            SYSTEM,
            settings.url,
            timeout_s=settings.timeout_s,
            headers={"Authorization": f"Bearer {settings.token.get_secret_value()}"},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.api.aclose()

    def media_url(self, key: str) -> str:
        """The URL tootctl is given for a storage key (it reads only the path)."""
        return f"{self.settings.url}/system/{key.lstrip('/')}"

    def _fail(self, what: str, response: object, scope: str) -> PlatformError:
        hint = f"the token needs the scope {scope} and a staff account (Admin or Moderator)"
        return self.api.failure(what, response, hint)  # type: ignore[arg-type]

    async def find_account(self, username: str, domain: str | None) -> str | None:
        """The id of ``username`` (local, or at ``domain``), through the admin API."""
        params: dict[str, object] = {"username": username, "limit": 200}
        params.update({"remote": "true", "by_domain": domain} if domain else {"local": "true"})
        # The v1 list shows active accounts unless asked: a suspended one needs its own query.
        for status in ({}, {"suspended": "true"}):
            response = await self.api.send(
                "GET", "/api/v1/admin/accounts", params={**params, **status}
            )
            if response.status_code != 200:
                raise self._fail(f"finding account {username}", response, "admin:read:accounts")
            for account in json_of(response, SYSTEM, "admin accounts"):
                if (
                    str(account.get("username", "")).lower() == username.lower()
                    and (account.get("domain") or None) == domain
                ):
                    return str(account["id"])
        return None

    async def report(
        self, account_id: str, status_ids: list[str], comment: str, category: str
    ) -> str:
        """File a report as the staff account; returns its id."""
        body = {
            "account_id": account_id,
            "status_ids": status_ids,
            "comment": comment[:1000],
            "category": category,
            "forward": self.settings.forward_remote,
        }
        response = await self.api.send("POST", "/api/v1/reports", json_body=body)
        if response.status_code != 200:
            raise self._fail(f"report on account {account_id}", response, "write:reports")
        return str(json_of(response, SYSTEM, "report")["id"])

    async def account_action(
        self, account_id: str, action: str, text: str, report_id: str | None
    ) -> None:
        """``POST /api/v1/admin/accounts/:id/action`` (sensitive, silence, disable, suspend)."""
        body: dict[str, object] = {
            "type": action,
            "text": text[:1000],
            "send_email_notification": self.settings.notify_account,
        }
        if report_id:
            body["report_id"] = report_id
        response = await self.api.send(
            "POST", f"/api/v1/admin/accounts/{account_id}/action", json_body=body
        )
        if response.status_code != 200:
            raise self._fail(f"{action} of account {account_id}", response, "admin:write:accounts")

    async def undo_action(self, account_id: str, action: str) -> None:
        """Reverse an account action (unsuspend, unsilence, unsensitive, enable)."""
        verb = UNDO[action]
        response = await self.api.send("POST", f"/api/v1/admin/accounts/{account_id}/{verb}")
        if response.status_code != 200:
            raise self._fail(f"{verb} of account {account_id}", response, "admin:write:accounts")

    async def resolve_report(self, report_id: str) -> None:
        """Mark a report resolved."""
        response = await self.api.send("POST", f"/api/v1/admin/reports/{report_id}/resolve")
        if response.status_code != 200:
            raise self._fail(f"resolving report {report_id}", response, "admin:write:reports")
