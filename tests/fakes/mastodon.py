"""FakeMastodon: a fake of Mastodon 4.x's admin and report API, for moderation tests.

Written from ``mastodon/mastodon`` (the 4.x line; files read through the code index):

- ``config/routes/api.rb``: ``/api/v1/admin/accounts`` (index/show, ``:id/action``, enable,
  unsensitive, unsilence, unsuspend), ``/api/v1/admin/reports`` (index/show, resolve, reopen,
  assign_to_self, unassign), ``/api/v1/reports`` (create), ``/api/v1/statuses/:id``,
  ``/api/v1/accounts/:id/statuses``.
- ``app/controllers/api/base_controller.rb``: error bodies (``{"error": …}``; 404
  ``Record not found``, 403 ``This action is not allowed``, 403
  ``This action is outside the authorized scopes``, 401 for a bad/revoked token where a token
  is required, 422 ``Validation failed: …``), ``render_empty`` = ``{}``, ``Link`` pagination.
- ``app/controllers/api/v1/admin/{accounts,account_actions,reports}_controller.rb``:
  ``authorize_if_got_token!`` (scopes ``admin:read``/``admin:read:accounts``,
  ``admin:write``/``admin:write:accounts``, ``…:reports``), then the record (404), then the
  role check (403). A request without a usable token therefore gets 403, not 401.
- ``app/controllers/api/v1/reports_controller.rb`` and ``app/services/report_service.rb``:
  ``doorkeeper_authorize! :write, :'write:reports'``; staff are notified of each report.
- ``app/models/admin/account_action.rb``: types ``none disable sensitive silence suspend``;
  a strike (warning) is recorded; with type ``none`` only ``report_id``'s report is resolved,
  otherwise every unresolved report on the account; an email goes out when
  ``send_email_notification`` (default true) and the account is local.
- Serializers: ``REST::Admin::AccountSerializer``, ``REST::AccountSerializer``,
  ``REST::Admin::ReportSerializer``, ``REST::ReportSerializer``, ``REST::StatusSerializer``,
  ``REST::MediaAttachmentSerializer``, ``REST::RoleSerializer``.
- ``lib/mastodon/cli/media.rb`` (``tootctl media lookup URL``) and Paperclip's
  ``:class/:attachment/:id_partition/:style/:filename`` layout (``cache/`` first for remote
  media; the id zero-padded to 9+ digits and cut into groups of 3).

No HTTP API maps a media attachment id to its status: ``GET /api/v1/media/:id`` only serves
the caller's own unattached uploads, and the admin web UI is HTML. The real route is
``tootctl media lookup <url>`` on the Mastodon host, which :meth:`FakeMastodon.tootctl_media_lookup`
reproduces. ``GET /api/v1/statuses/:id`` and ``GET /api/v1/accounts/:id/statuses`` are
served so an integration holding a status id can read its account and media.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from tests.fakes._server import FakeServer, json_response

ACTION_TYPES = ("none", "disable", "sensitive", "silence", "suspend")
REPORT_CATEGORIES = ("other", "spam", "legal", "violation")
# Default roles as Mastodon seeds them; permission bitmasks are illustrative.
ROLES: dict[str | None, dict[str, Any]] = {
    None: {"id": "-99", "name": "", "permissions": "65536", "color": "", "highlighted": False},
    "Moderator": {
        "id": "1",
        "name": "Moderator",
        "permissions": "1308",
        "color": "",
        "highlighted": True,
    },
    "Admin": {
        "id": "2",
        "name": "Admin",
        "permissions": "983036",
        "color": "",
        "highlighted": True,
    },
    "Owner": {"id": "3", "name": "Owner", "permissions": "1", "color": "", "highlighted": True},
}
LOOKUP_MODELS = {
    "Account",
    "Backup",
    "CustomEmoji",
    "Import",
    "MediaAttachment",
    "PreviewCard",
    "SiteUpload",
}


class MastodonError(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def rails_time(dt: datetime) -> str:
    """``ActiveSupport::TimeWithZone#as_json``: ISO 8601, milliseconds, ``Z``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def id_partition(record_id: int) -> str:
    """Paperclip's ``:id_partition``: ``"%09d" % id`` cut into groups of three digits."""
    digits = f"{record_id:09d}"
    return "/".join(digits[i : i + 3] for i in range(0, len(digits), 3))


def _classify(segment: str) -> str:
    """ActiveSupport's ``classify`` for the table names Paperclip uses."""
    singular = re.sub(r"ies$", "y", segment) if segment.endswith("ies") else segment.rstrip("s")
    return "".join(part.capitalize() for part in singular.split("_"))


@dataclass
class Account:
    id: int
    username: str
    domain: str | None
    created_at: datetime
    display_name: str = ""
    note: str = ""
    email: str | None = None
    role: str | None = None
    locale: str | None = "en"
    confirmed: bool = True
    approved: bool = True
    disabled: bool = False
    suspended_at: datetime | None = None
    silenced_at: datetime | None = None
    sensitized_at: datetime | None = None
    bot: bool = False

    @property
    def local(self) -> bool:
        return self.domain is None

    @property
    def staff(self) -> bool:
        return self.role is not None


@dataclass
class MediaAttachment:
    id: int
    account_id: int
    status_id: int | None
    file_name: str
    type: str = "image"
    remote_url: str = ""
    description: str | None = None
    blurhash: str | None = None


@dataclass
class Status:
    id: int
    account_id: int
    created_at: datetime
    content: str
    visibility: str = "public"
    sensitive: bool = False
    spoiler_text: str = ""
    deleted: bool = False
    url: str | None = None


@dataclass
class Report:
    id: int
    account_id: int
    target_account_id: int
    status_ids: list[int]
    comment: str
    category: str
    rule_ids: list[int]
    forwarded: bool
    created_at: datetime
    updated_at: datetime
    action_taken_at: datetime | None = None
    action_taken_by_account_id: int | None = None
    assigned_account_id: int | None = None


@dataclass
class Token:
    token: str
    account_id: int | None
    scopes: frozenset[str]
    revoked: bool = False


@dataclass(frozen=True)
class Strike:
    """An ``AccountWarning`` created by an account action."""

    account_id: int
    target_account_id: int
    action: str
    text: str
    report_id: int | None
    status_ids: list[int] = field(default_factory=list)
    emailed: bool = False


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeMastodon(FakeServer):
    """A fake Mastodon on a loopback port.

    ``domain`` is the instance's ``LOCAL_DOMAIN`` (default: the fake's own ``host:port``);
    ``media_base_url`` is where media URLs point (default ``{url}/system``, Mastodon's
    filesystem storage; pass ``https://files.example/<bucket>`` to mimic path-style S3).
    """

    def __init__(
        self,
        *,
        domain: str | None = None,
        media_base_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self._domain = domain
        self._media_base_url = media_base_url
        self.accounts: dict[int, Account] = {}
        self.statuses: dict[int, Status] = {}
        self.media: dict[int, MediaAttachment] = {}
        self.reports: dict[int, Report] = {}
        self.tokens: dict[str, Token] = {}
        self.strikes: list[Strike] = []
        self.staff_notifications: list[dict[str, Any]] = []
        self.action_log: list[dict[str, Any]] = []
        self._seq = itertools.count(1)
        self._report_ids = itertools.count(1)

    # --- ids, urls -------------------------------------------------------------------------

    def _snowflake(self) -> int:
        """Mastodon's snowflake ids: milliseconds << 16 | sequence (18 digits today)."""
        return (int(time.time() * 1000) << 16) | (next(self._seq) & 0xFFFF)

    @property
    def domain(self) -> str:
        return self._domain or urlsplit(self.url).netloc

    @property
    def media_base_url(self) -> str:
        return self._media_base_url or f"{self.url}/system"

    def media_storage_key(self, media_id: int | str, style: str = "original") -> str:
        """The object key / path under the storage root of a media attachment's file."""
        media = self.media[int(media_id)]
        prefix = "" if self.accounts[media.account_id].local else "cache/"
        return f"{prefix}media_attachments/files/{id_partition(media.id)}/{style}/{media.file_name}"

    def media_url(self, media_id: int | str, style: str = "original") -> str:
        return f"{self.media_base_url}/{self.media_storage_key(media_id, style)}"

    # --- seeding ------------------------------------------------------------------------------

    def add_account(
        self,
        username: str,
        *,
        domain: str | None = None,
        role: str | None = None,
        email: str | None = None,
        display_name: str = "",
    ) -> str:
        """An account (local unless ``domain``); ``role`` is ``Owner``/``Admin``/``Moderator``
        or ``None``. Returns the id as the API spells it (a string)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            aid = self._snowflake()
            local = domain is None
            self.accounts[aid] = Account(
                aid,
                username,
                domain,
                datetime.now(UTC),
                display_name,
                email=email or (f"{username}@example.invalid" if local else None),
                role=role if local else None,
                locale="en" if local else None,
                confirmed=local,
                approved=local,
            )
            return str(aid)

    def add_status(
        self,
        account_id: int | str,
        content: str = "<p>hello</p>",
        *,
        visibility: str = "public",
        sensitive: bool = False,
        media: Iterable[str] = (),
    ) -> str:
        """A status with one media attachment per file name in ``media``."""
        with self._lock:
            sid = self._snowflake()
            account = self.accounts[int(account_id)]
            url = None if account.local else f"https://{account.domain}/@{account.username}/{sid}"
            self.statuses[sid] = Status(
                sid, account.id, datetime.now(UTC), content, visibility, sensitive, url=url
            )
            for name in media:
                self.add_media(account_id, name, status_id=sid)
            return str(sid)

    def add_media(
        self,
        account_id: int | str,
        file_name: str = "a1b2c3d4e5f6a7b8.png",
        *,
        status_id: int | str | None = None,
        type: str = "image",
    ) -> str:
        with self._lock:
            mid = self._snowflake()
            account = self.accounts[int(account_id)]
            remote_url = "" if account.local else f"https://{account.domain}/media/{file_name}"
            self.media[mid] = MediaAttachment(
                mid,
                account.id,
                int(status_id) if status_id is not None else None,
                file_name,
                type,
                remote_url,
            )
            return str(mid)

    def add_token(self, account_id: int | str | None, scopes: str | Iterable[str]) -> str:
        """An OAuth access token for ``account_id`` (``None``: an app-only token)."""
        scope_set = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        token = secrets.token_urlsafe(32)
        with self._lock:
            owner = int(account_id) if account_id is not None else None
            self.tokens[token] = Token(token, owner, scope_set)
        return token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self.tokens[token].revoked = True

    def account_state(self, account_id: int | str) -> dict[str, Any]:
        """The admin view of an account (what ``GET /api/v1/admin/accounts/:id`` shows)."""
        with self._lock:
            return self._admin_account(self.accounts[int(account_id)])

    # --- tootctl ------------------------------------------------------------------------------

    def tootctl_media_lookup(self, url: str) -> tuple[int, str]:
        """``tootctl media lookup URL``: (exit status, what it prints). Like the real command it
        drops the first path segment (``system`` or the bucket) before reading the layout."""
        segments = urlsplit(url).path.split("/")[2:]
        segments = [s for s in segments if s != "cache"]
        if len(segments) not in (7, 10):
            return 1, "Not a media URL"
        model = _classify(segments[0])
        try:
            record_id = int("".join(segments[2:-2]))
        except ValueError:
            return 1, "Cannot find corresponding record"
        if model not in LOOKUP_MODELS:
            return 1, f"Cannot find corresponding model: {model}"
        with self._lock:
            if model == "MediaAttachment":
                media = self.media.get(record_id)
                status = self.statuses.get(media.status_id) if media and media.status_id else None
                if status is None:
                    return 1, "Cannot find corresponding record"
                return 0, self._status_url(status)
            if model == "Account" and record_id in self.accounts:
                account = self.accounts[record_id]
                return 0, self._account_url(account)
        return 1, "Cannot find corresponding record"

    # --- serializers --------------------------------------------------------------------------

    def _account_url(self, a: Account) -> str:
        if a.local:
            return f"{self.url}/@{a.username}"
        return f"https://{a.domain}/@{a.username}"

    def _status_url(self, s: Status) -> str:
        account = self.accounts[s.account_id]
        return s.url or f"{self.url}/@{account.username}/{s.id}"

    def _account(self, a: Account) -> dict[str, Any]:
        suspended = a.suspended_at is not None
        statuses = [s for s in self.statuses.values() if s.account_id == a.id and not s.deleted]
        last = max((s.created_at for s in statuses), default=None)
        avatar = f"{self.url}/avatars/original/missing.png"
        body: dict[str, Any] = {
            "id": str(a.id),
            "username": a.username,
            "acct": a.username if a.local else f"{a.username}@{a.domain}",
            "display_name": "" if suspended else a.display_name,
            "locked": False,
            "bot": False if suspended else a.bot,
            "discoverable": False,
            "group": False,
            "created_at": rails_time(
                a.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
            ),
            "note": "" if suspended else a.note,
            "url": self._account_url(a),
            "uri": f"{self.url}/users/{a.username}"
            if a.local
            else f"https://{a.domain}/users/{a.username}",
            "avatar": avatar,
            "avatar_static": avatar,
            "header": f"{self.url}/headers/original/missing.png",
            "header_static": f"{self.url}/headers/original/missing.png",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": len(statuses),
            "last_status_at": last.date().isoformat() if last else None,
            "emojis": [],
            "fields": [],
        }
        if suspended:
            body["suspended"] = True
        if a.silenced_at is not None:
            body["limited"] = True
        if a.local:
            body["noindex"] = False
        return body

    def _admin_account(self, a: Account) -> dict[str, Any]:
        return {
            "id": str(a.id),
            "username": a.username,
            "domain": a.domain,
            "created_at": rails_time(a.created_at),
            "email": a.email,
            "ip": None,
            "ips": [],
            "role": ROLES[a.role] if a.local else None,
            "confirmed": a.confirmed,
            "suspended": a.suspended_at is not None,
            "silenced": a.silenced_at is not None,
            "sensitized": a.sensitized_at is not None,
            "disabled": a.disabled,
            "approved": a.approved,
            "locale": a.locale,
            "invite_request": None,
            "account": self._account(a),
        }

    def _media(self, m: MediaAttachment) -> dict[str, Any]:
        return {
            "id": str(m.id),
            "type": m.type,
            "url": self.media_url(m.id, "original"),
            "preview_url": self.media_url(m.id, "small"),
            "remote_url": m.remote_url or None,
            "preview_remote_url": None,
            "text_url": None,
            "meta": {},
            "description": m.description,
            "blurhash": m.blurhash,
        }

    def _status(self, s: Status) -> dict[str, Any]:
        account = self.accounts[s.account_id]
        return {
            "id": str(s.id),
            "created_at": rails_time(s.created_at),
            "in_reply_to_id": None,
            "in_reply_to_account_id": None,
            "sensitive": s.sensitive or account.sensitized_at is not None,
            "spoiler_text": s.spoiler_text,
            "visibility": s.visibility,
            "language": "en",
            "uri": f"{self.url}/users/{account.username}/statuses/{s.id}",
            "url": self._status_url(s),
            "replies_count": 0,
            "reblogs_count": 0,
            "favourites_count": 0,
            "edited_at": None,
            "content": s.content,
            "reblog": None,
            "account": self._account(account),
            "media_attachments": [
                self._media(m) for m in self.media.values() if m.status_id == s.id
            ],
            "mentions": [],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": None,
        }

    def _admin_report(self, r: Report) -> dict[str, Any]:
        def acct(aid: int | None) -> dict[str, Any] | None:
            return self._admin_account(self.accounts[aid]) if aid is not None else None

        return {
            "id": str(r.id),
            "action_taken": r.action_taken_at is not None,
            "action_taken_at": rails_time(r.action_taken_at) if r.action_taken_at else None,
            "category": r.category,
            "comment": r.comment,
            "forwarded": r.forwarded,
            "created_at": rails_time(r.created_at),
            "updated_at": rails_time(r.updated_at),
            "account": acct(r.account_id),
            "target_account": acct(r.target_account_id),
            "assigned_account": acct(r.assigned_account_id),
            "action_taken_by_account": acct(r.action_taken_by_account_id),
            "statuses": [
                self._status(self.statuses[i]) for i in r.status_ids if i in self.statuses
            ],
            "rules": [{"id": str(i), "text": f"rule {i}", "hint": ""} for i in r.rule_ids],
        }

    def _report(self, r: Report) -> dict[str, Any]:
        return {
            "id": str(r.id),
            "action_taken": r.action_taken_at is not None,
            "action_taken_at": rails_time(r.action_taken_at) if r.action_taken_at else None,
            "category": r.category,
            "comment": r.comment,
            "forwarded": r.forwarded,
            "created_at": rails_time(r.created_at),
            "status_ids": [str(i) for i in r.status_ids],
            "rule_ids": [str(i) for i in r.rule_ids] or None,
            "target_account": self._account(self.accounts[r.target_account_id]),
        }

    # --- auth (doorkeeper + pundit) -----------------------------------------------------------

    def _bearer(self, request: web.Request) -> Token | None:
        """``doorkeeper_token``: the token record named by the header (revoked ones too)."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return self.tokens.get(header[7:].strip())

    def _doorkeeper_authorize(self, request: web.Request, *scopes: str) -> Token:
        token = self._bearer(request)
        if token is None:
            raise MastodonError(401, "The access token is invalid")
        if token.revoked:
            raise MastodonError(401, "The access token was revoked")
        if not token.scopes & set(scopes):
            raise MastodonError(403, "This action is outside the authorized scopes")
        return token

    def _authorize_if_got_token(self, request: web.Request, *scopes: str) -> Account | None:
        token = self._bearer(request)
        if token is not None:
            self._doorkeeper_authorize(request, *scopes)
        if token is None or token.account_id is None:
            return None
        return self.accounts.get(token.account_id)

    @staticmethod
    def _require_staff(actor: Account | None) -> Account:
        if actor is None or not actor.staff or actor.disabled or actor.suspended_at is not None:
            raise MastodonError(403, "This action is not allowed")
        return actor

    def _find_account(self, raw: str) -> Account:
        account = self.accounts.get(int(raw)) if raw.isdigit() else None
        if account is None:
            raise MastodonError(404, "Record not found")
        return account

    def _find_report(self, raw: str) -> Report:
        report = self.reports.get(int(raw)) if raw.isdigit() else None
        if report is None:
            raise MastodonError(404, "Record not found")
        return report

    # --- app ----------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        routes: list[tuple[str, str, Route]] = [
            ("GET", "/api/v1/admin/accounts", self._admin_accounts_index),
            ("GET", "/api/v1/admin/accounts/{id}", self._admin_account_show),
            ("POST", "/api/v1/admin/accounts/{id}/action", self._admin_account_action),
            ("POST", "/api/v1/admin/accounts/{id}/enable", self._admin_account_undo),
            ("POST", "/api/v1/admin/accounts/{id}/unsensitive", self._admin_account_undo),
            ("POST", "/api/v1/admin/accounts/{id}/unsilence", self._admin_account_undo),
            ("POST", "/api/v1/admin/accounts/{id}/unsuspend", self._admin_account_undo),
            ("GET", "/api/v1/admin/reports", self._admin_reports_index),
            ("GET", "/api/v1/admin/reports/{id}", self._admin_report_show),
            ("POST", "/api/v1/admin/reports/{id}/resolve", self._admin_report_update),
            ("POST", "/api/v1/admin/reports/{id}/reopen", self._admin_report_update),
            ("POST", "/api/v1/admin/reports/{id}/assign_to_self", self._admin_report_update),
            ("POST", "/api/v1/admin/reports/{id}/unassign", self._admin_report_update),
            ("POST", "/api/v1/reports", self._create_report),
            ("GET", "/api/v1/statuses/{id}", self._status_show),
            ("GET", "/api/v1/accounts/{id}/statuses", self._account_statuses),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._guard(handler))
        return app

    def _guard(self, handler: Route) -> Route:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except MastodonError as exc:
                return json_response({"error": exc.error}, status=exc.status)

        return run

    async def _params(self, request: web.Request) -> dict[str, Any]:
        """Rails' params: query string merged with a JSON or form body."""
        params: dict[str, Any] = {k: v for k, v in request.query.items() if not k.endswith("[]")}
        for key in {k for k in request.query if k.endswith("[]")}:
            params[key[:-2]] = request.query.getall(key)
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = await request.post()
                for key in set(form.keys()):
                    values = form.getall(key)
                    if key.endswith("[]"):
                        params[key[:-2]] = [str(v) for v in values]
                    else:
                        params[key] = str(values[-1])
        return params

    @staticmethod
    def _truthy(value: Any, default: bool) -> bool:
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        return str(value).lower() not in ("0", "f", "false", "off", "no")

    def _paginate(
        self, request: web.Request, items: list[Any], default_limit: int
    ) -> tuple[list[Any], str]:
        """``to_a_paginated_by_id`` (newest first) and the ``Link`` header."""
        q = request.query
        raw_limit = q.get("limit")
        limit = default_limit if not raw_limit else min(abs(int(raw_limit)), default_limit * 2)
        ordered = sorted(items, key=lambda x: x.id, reverse=True)
        if q.get("max_id"):
            ordered = [x for x in ordered if x.id < int(q["max_id"])]
        if q.get("since_id"):
            ordered = [x for x in ordered if x.id > int(q["since_id"])]
        if q.get("min_id"):
            ordered = sorted((x for x in ordered if x.id > int(q["min_id"])), key=lambda x: x.id)[
                :limit
            ]
            ordered.reverse()
        page = ordered[:limit]
        keep = {k: v for k, v in q.items() if k not in ("max_id", "since_id", "min_id")}
        base = f"{self.url}{request.path}"
        links = []
        if len(page) == limit and page:
            links.append(f'<{base}?{urlencode({**keep, "max_id": page[-1].id})}>; rel="next"')
        if page:
            links.append(f'<{base}?{urlencode({**keep, "min_id": page[0].id})}>; rel="prev"')
        return page, ", ".join(links)

    # --- admin accounts -----------------------------------------------------------------------

    async def _admin_accounts_index(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:read", "admin:read:accounts")
            self._require_staff(actor)
            q = request.query
            origin_remote = "remote" in q
            status = next(
                (s for s in ("pending", "disabled", "silenced", "suspended") if s in q), "active"
            )
            found = []
            for a in self.accounts.values():
                if a.local == origin_remote or (q.get("by_domain") and a.domain != q["by_domain"]):
                    continue
                if q.get("username") and not a.username.startswith(q["username"]):
                    continue
                state = {
                    "suspended": a.suspended_at is not None,
                    "silenced": a.silenced_at is not None,
                    "disabled": a.disabled,
                    "pending": not a.approved,
                }
                if (status == "active" and a.suspended_at is None) or state.get(status, False):
                    found.append(a)
            page, link = self._paginate(request, found, 100)
            body = [self._admin_account(a) for a in page]
        return json_response(body, headers={"Link": link} if link else None)

    async def _admin_account_show(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:read", "admin:read:accounts")
            account = self._find_account(request.match_info["id"])
            self._require_staff(actor)
            return json_response(self._admin_account(account))

    async def _admin_account_action(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:write", "admin:write:accounts")
            target = self._find_account(request.match_info["id"])
            staff = self._require_staff(actor)
            action = str(params.get("type", ""))
            if action not in ACTION_TYPES:
                raise MastodonError(422, "Validation failed: Type is not included in the list")
            report = None
            if params.get("report_id"):
                report = self._find_report(str(params["report_id"]))
            if action != "none" and target.staff:
                raise MastodonError(403, "This action is not allowed")
            now = datetime.now(UTC)
            if action == "disable":
                if not target.local:
                    raise MastodonError(403, "This action is not allowed")
                target.disabled = True
            elif action == "sensitive":
                target.sensitized_at = now
            elif action == "silence":
                target.silenced_at = now
            elif action == "suspend":
                target.suspended_at = now
            emailed = self._truthy(params.get("send_email_notification"), True) and target.local
            status_ids = list(report.status_ids) if report else []
            text = str(params.get("text") or "")
            self.strikes.append(
                Strike(
                    staff.id,
                    target.id,
                    action,
                    text,
                    report.id if report else None,
                    status_ids,
                    emailed,
                )
            )
            if action == "none":
                to_resolve = [report] if report else []
            else:
                to_resolve = [
                    r
                    for r in self.reports.values()
                    if r.target_account_id == target.id and r.action_taken_at is None
                ]
            for r in to_resolve:
                r.action_taken_at, r.action_taken_by_account_id, r.updated_at = now, staff.id, now
            self.action_log.append(
                {"account_id": staff.id, "action": action, "target_account_id": target.id}
            )
        return json_response({})

    async def _admin_account_undo(self, request: web.Request) -> web.StreamResponse:
        verb = request.path.rsplit("/", 1)[-1]
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:write", "admin:write:accounts")
            target = self._find_account(request.match_info["id"])
            self._require_staff(actor)
            if verb == "enable":
                if not target.local:
                    raise MastodonError(403, "This action is not allowed")
                target.disabled = False
            elif verb == "unsensitive":
                target.sensitized_at = None
            elif verb == "unsilence":
                target.silenced_at = None
            else:
                target.suspended_at = None
            return json_response(self._admin_account(target))

    # --- admin reports ------------------------------------------------------------------------

    async def _admin_reports_index(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:read", "admin:read:reports")
            self._require_staff(actor)
            q = request.query
            resolved = "resolved" in q and self._truthy(q["resolved"], True)
            found = [
                r
                for r in self.reports.values()
                if (r.action_taken_at is not None) == resolved
                and (not q.get("account_id") or str(r.account_id) == q["account_id"])
                and (
                    not q.get("target_account_id")
                    or str(r.target_account_id) == q["target_account_id"]
                )
            ]
            page, link = self._paginate(request, found, 100)
            body = [self._admin_report(r) for r in page]
        return json_response(body, headers={"Link": link} if link else None)

    async def _admin_report_show(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:read", "admin:read:reports")
            report = self._find_report(request.match_info["id"])
            self._require_staff(actor)
            return json_response(self._admin_report(report))

    async def _admin_report_update(self, request: web.Request) -> web.StreamResponse:
        verb = request.path.rsplit("/", 1)[-1]
        with self._lock:
            actor = self._authorize_if_got_token(request, "admin:write", "admin:write:reports")
            report = self._find_report(request.match_info["id"])
            staff = self._require_staff(actor)
            now = datetime.now(UTC)
            if verb == "resolve":
                report.action_taken_at, report.action_taken_by_account_id = now, staff.id
            elif verb == "reopen":
                report.action_taken_at = report.action_taken_by_account_id = None
            elif verb == "assign_to_self":
                report.assigned_account_id = staff.id
            else:
                report.assigned_account_id = None
            report.updated_at = now
            return json_response(self._admin_report(report))

    # --- user reports -------------------------------------------------------------------------

    async def _create_report(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        with self._lock:
            token = self._doorkeeper_authorize(request, "write", "write:reports")
            reporter = self.accounts.get(token.account_id) if token.account_id is not None else None
            if reporter is None:
                raise MastodonError(422, "This method requires an authenticated user")
            if reporter.disabled:
                raise MastodonError(403, "Your login is currently disabled")
            target = self._find_account(str(params.get("account_id", "")))
            status_ids = [int(i) for i in params.get("status_ids") or []]
            if any(
                i not in self.statuses or self.statuses[i].account_id != target.id
                for i in status_ids
            ):
                raise MastodonError(404, "Record not found")
            rule_ids = [int(i) for i in params.get("rule_ids") or []]
            category = "violation" if rule_ids else str(params.get("category") or "other")
            if category not in REPORT_CATEGORIES:
                raise MastodonError(422, f"'{category}' is not a valid category")
            comment = str(params.get("comment") or "")
            if len(comment) > 1000:
                raise MastodonError(
                    422, "Validation failed: Comment is too long (maximum is 1000 characters)"
                )
            forward = self._truthy(params.get("forward"), False) and not target.local
            now = datetime.now(UTC)
            rid = next(self._report_ids)
            report = Report(
                rid,
                reporter.id,
                target.id,
                status_ids,
                comment,
                category,
                rule_ids,
                forward,
                now,
                now,
            )
            self.reports[rid] = report
            for staff in [a for a in self.accounts.values() if a.staff]:
                self.staff_notifications.append(
                    {"account_id": str(staff.id), "report_id": str(rid)}
                )
            return json_response(self._report(report))

    # --- statuses -----------------------------------------------------------------------------

    def _visible(self, s: Status, viewer: Account | None) -> bool:
        account = self.accounts[s.account_id]
        if s.deleted or account.suspended_at is not None:
            return False
        return s.visibility in ("public", "unlisted") or (
            viewer is not None and viewer.id == s.account_id
        )

    async def _status_show(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            viewer = self._authorize_if_got_token(request, "read", "read:statuses")
            raw = request.match_info["id"]
            status = self.statuses.get(int(raw)) if raw.isdigit() else None
            if status is None or not self._visible(status, viewer):
                raise MastodonError(404, "Record not found")
            return json_response(self._status(status))

    async def _account_statuses(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            viewer = self._authorize_if_got_token(request, "read", "read:statuses")
            account = self._find_account(request.match_info["id"])
            only_media = self._truthy(request.query.get("only_media"), False)
            found = [
                s
                for s in self.statuses.values()
                if s.account_id == account.id
                and self._visible(s, viewer)
                and (not only_media or any(m.status_id == s.id for m in self.media.values()))
            ]
            page, link = self._paginate(request, found, 20)
            body = [self._status(s) for s in page]
        return json_response(body, headers={"Link": link} if link else None)
