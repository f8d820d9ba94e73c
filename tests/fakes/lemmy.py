"""FakeLemmy: a fake of Lemmy 0.19's HTTP API v3 (what a moderation integration uses).

Written from ``LemmyNet/lemmy`` at tag 0.19.20 and ``LemmyNet/lemmy-js-client`` at
0.19.13-beta.1 (the 0.19.4+ media listing is unchanged since 0.19.4):

- ``src/api_routes_http.rs``: routes under ``/api/v3`` and their methods.
- ``crates/api/src/lib.rs`` (``read_auth_token``: ``Authorization: Bearer <jwt>`` or the
  ``jwt`` cookie), ``src/session_middleware.rs`` (a bad token is ignored, so the endpoint
  answers 401 ``incorrect_login``), ``crates/api_common/src/claims.rs`` (HS256 JWT with
  ``sub``/``iss``/``iat``, checked against stored login tokens; a ban invalidates them).
- ``crates/utils/src/error.rs``: errors are ``{"error": "<snake_case>"}`` (plus ``message``
  for variants with data), status 400, 401 for ``incorrect_login``.
- ``crates/api/src/local_user/{login,ban_person}.rs``, ``crates/api/src/site/purge/*.rs``,
  ``crates/api/src/site/list_all_media.rs``, ``crates/api_crud/src/{post,comment}/remove.rs``,
  ``crates/api/src/{post,comment}_report/*.rs``, ``crates/apub/src/api/search.rs``.
- ``crates/api_common/src/{utils,request}.rs``: ``remove_user_data`` and
  ``purge_user_account`` delete the user's uploads through pict-rs's delete-token URL (the
  ``local_image`` rows stay); ``purge_post`` purges ``url`` and ``thumbnail_url`` through
  ``POST {pictrs}/internal/purge?alias=<last path segment>`` with ``x-api-token``.
- ``crates/db_views/src/{post_view,comment_view,local_image_view}.rs``: which rows a listing
  or a search shows (search hides removed/deleted posts and, unless the viewer's
  ``show_nsfw`` is on, NSFW posts; ``type_=Url`` matches ``post.url`` exactly); page 1–100,
  limit 1–50 (default 10).
- ``crates/routes/src/images.rs``: ``/pictrs/image`` upload proxy (records ``local_image``),
  ``/pictrs/image/{alias}`` (original, or ``process.{fmt}`` with ``thumbnail``/``format``).
- Response views: ``crates/db_views*/src/structs.rs`` and ``crates/db_schema/src/source``
  (``skip_serializing_none``: absent optionals are left out).

Partial: ``GET /site`` carries only the fields listed in ``docs/fakes.md``; sorting is always
newest first; no federation, communities moderation beyond a moderator list, or votes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from tests.fakes._server import FakeServer, json_response

LEMMY_VERSION = "0.19.20"
DELETED_REPLACEMENT_TEXT = "*Permanently Deleted*"
REQWEST_TIMEOUT = 10.0


class LemmyError(Exception):
    """A ``LemmyErrorType``; serialised as ``{"error": name}`` (+ ``message``)."""

    def __init__(self, error: str, status: int = 400, message: str | None = None) -> None:
        super().__init__(error)
        self.error, self.status, self.message = error, status, message

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error}
        if self.message is not None:
            body["message"] = self.message
        return json_response(body, status=self.status)


def ts(dt: datetime) -> str:
    """chrono's ``DateTime<Utc>`` serialisation (fraction only when non-zero)."""
    base = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{dt.microsecond:06d}Z" if dt.microsecond else f"{base}Z"


def _now() -> datetime:
    return datetime.now(UTC)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """``skip_serializing_none``."""
    return {k: v for k, v in d.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Person:
    id: int
    name: str
    actor_id: str
    local: bool
    published: datetime
    display_name: str | None = None
    avatar: str | None = None
    banner: str | None = None
    bio: str | None = None
    banned: bool = False
    ban_expires: datetime | None = None
    deleted: bool = False
    bot_account: bool = False
    updated: datetime | None = None
    # local_user (None for remote persons)
    local_user_id: int | None = None
    password: str | None = None
    email: str | None = None
    admin: bool = False
    show_nsfw: bool = False

    def json(self) -> dict[str, Any]:
        return _clean(
            {
                "id": self.id,
                "name": self.name,
                "display_name": self.display_name,
                "avatar": self.avatar,
                "banned": self.banned,
                "published": ts(self.published),
                "updated": ts(self.updated) if self.updated else None,
                "actor_id": self.actor_id,
                "bio": self.bio,
                "local": self.local,
                "banner": self.banner,
                "deleted": self.deleted,
                "bot_account": self.bot_account,
                "ban_expires": ts(self.ban_expires) if self.ban_expires else None,
                "instance_id": 1,
            }
        )


@dataclass
class Community:
    id: int
    name: str
    title: str
    actor_id: str
    published: datetime
    nsfw: bool = False
    removed: bool = False
    deleted: bool = False
    hidden: bool = False
    moderators: list[int] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "removed": self.removed,
            "published": ts(self.published),
            "deleted": self.deleted,
            "nsfw": self.nsfw,
            "actor_id": self.actor_id,
            "local": True,
            "hidden": self.hidden,
            "posting_restricted_to_mods": False,
            "instance_id": 1,
            "visibility": "Public",
        }


@dataclass
class Post:
    id: int
    name: str
    creator_id: int
    community_id: int
    ap_id: str
    published: datetime
    url: str | None = None
    body: str | None = None
    thumbnail_url: str | None = None
    alt_text: str | None = None
    url_content_type: str | None = None
    nsfw: bool = False
    removed: bool = False
    deleted: bool = False
    locked: bool = False
    updated: datetime | None = None

    def json(self) -> dict[str, Any]:
        return _clean(
            {
                "id": self.id,
                "name": self.name,
                "url": self.url,
                "body": self.body,
                "creator_id": self.creator_id,
                "community_id": self.community_id,
                "removed": self.removed,
                "locked": self.locked,
                "published": ts(self.published),
                "updated": ts(self.updated) if self.updated else None,
                "deleted": self.deleted,
                "nsfw": self.nsfw,
                "thumbnail_url": self.thumbnail_url,
                "ap_id": self.ap_id,
                "local": True,
                "language_id": 0,
                "featured_community": False,
                "featured_local": False,
                "url_content_type": self.url_content_type,
                "alt_text": self.alt_text,
            }
        )


@dataclass
class Comment:
    id: int
    creator_id: int
    post_id: int
    content: str
    ap_id: str
    published: datetime
    removed: bool = False
    deleted: bool = False
    updated: datetime | None = None

    def json(self, blank: bool = False) -> dict[str, Any]:
        return _clean(
            {
                "id": self.id,
                "creator_id": self.creator_id,
                "post_id": self.post_id,
                "content": "" if blank else self.content,
                "removed": self.removed,
                "published": ts(self.published),
                "updated": ts(self.updated) if self.updated else None,
                "deleted": self.deleted,
                "ap_id": self.ap_id,
                "local": True,
                "path": f"0.{self.id}",
                "distinguished": False,
                "language_id": 0,
            }
        )


@dataclass
class Report:
    id: int
    kind: str  # "post" | "comment"
    creator_id: int
    object_id: int
    original: dict[str, Any]
    reason: str
    published: datetime
    resolved: bool = False
    resolver_id: int | None = None
    updated: datetime | None = None


@dataclass
class LocalImage:
    local_user_id: int
    pictrs_alias: str
    pictrs_delete_token: str
    published: datetime


@dataclass
class PrivateMessage:
    id: int
    creator_id: int
    recipient_id: int
    content: str
    published: datetime
    ap_id: str


@dataclass(frozen=True)
class ModlogEntry:
    """One moderation action as Lemmy's mod tables record it (``mod_ban``,
    ``mod_remove_post``, ``admin_purge_post``, …); for inspection."""

    kind: str
    mod_person_id: int
    target_id: int
    reason: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class PictrsCall:
    """A request FakeLemmy sent to pict-rs, and its status (None: no answer)."""

    method: str
    url: str
    status: int | None


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    raise LemmyError("unknown", message=f"invalid boolean: {value}")


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LemmyError("unknown", message=f"invalid integer: {value}")
    try:
        return int(value)
    except ValueError as exc:
        raise LemmyError("unknown", message=f"invalid integer: {value}") from exc


def _limit_offset(page: int | None, limit: int | None) -> tuple[int, int]:
    """``limit_and_offset``: page 1..=100, limit 1..=50 (default 10)."""
    page = 1 if page is None else page
    if not 1 <= page <= 100:
        raise LemmyError("unknown", message="Page limit is > 100")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= 50:
        raise LemmyError("unknown", message="Fetch limit is > 50")
    return limit, (page - 1) * limit


def _ilike(text: str | None, q: str) -> bool:
    """``fuzzy_search``: ``%q%`` with spaces as ``%``, case-insensitive."""
    if text is None:
        return False
    pattern = ".*".join(re.escape(part) for part in q.lower().split(" "))
    return re.search(pattern, text.lower(), re.DOTALL) is not None


Handler = Callable[["_Req"], Awaitable[dict[str, Any]]]


class FakeLemmy(FakeServer):
    """A fake Lemmy 0.19 API v3 on a loopback port.

    ``pictrs_url``/``pictrs_api_key``: Lemmy's ``pictrs.url`` and ``pictrs.api_key`` (e.g. a
    :class:`FakePictrs`); without them, image uploads, purges and data removal skip pict-rs.
    ``reports_email_admins``: ``local_site.reports_email_admins`` (each new report is then
    recorded in ``admin_emails``, where real Lemmy sends an email to every admin).
    """

    def __init__(
        self,
        *,
        pictrs_url: str | None = None,
        pictrs_api_key: str | None = None,
        reports_email_admins: bool = True,
        site_name: str = "Fake Lemmy",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.pictrs_url = pictrs_url.rstrip("/") + "/" if pictrs_url else None
        self.pictrs_api_key = pictrs_api_key
        self.reports_email_admins = reports_email_admins
        self.site_name = site_name
        self.jwt_secret = secrets.token_bytes(32)
        self.persons: dict[int, Person] = {}
        self.communities: dict[int, Community] = {}
        self.posts: dict[int, Post] = {}
        self.comments: dict[int, Comment] = {}
        self.reports: dict[tuple[str, int], Report] = {}
        self.local_images: list[LocalImage] = []
        self.private_messages: list[PrivateMessage] = []
        self.modlog: list[ModlogEntry] = []
        self.admin_emails: list[dict[str, Any]] = []
        self.pictrs_calls: list[PictrsCall] = []
        self._tokens: dict[int, set[str]] = {}
        self._ids: dict[str, int] = {}
        self._started = _now()

    # --- seeding (test thread) -------------------------------------------------------------

    def _next(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    @property
    def base(self) -> str:
        """The instance's ``protocol_and_hostname`` (its own URL)."""
        return self.url

    def add_person(
        self,
        name: str,
        *,
        password: str = "password",
        admin: bool = False,
        local: bool = True,
        show_nsfw: bool = False,
        bot_account: bool = False,
        email: str | None = None,
        display_name: str | None = None,
        avatar: str | None = None,
    ) -> int:
        """A person (with a local user unless ``local=False``); returns the person id.
        Admins rank by creation: an earlier admin is "higher"."""
        with self._lock:
            pid = self._next("person")
            domain = self.base if local else "https://remote.example"
            person = Person(pid, name, f"{domain}/u/{name}", local, _now(), display_name, avatar)
            person.bot_account = bot_account
            if local:
                person.local_user_id = self._next("local_user")
                person.password, person.email = password, email
                person.admin, person.show_nsfw = admin, show_nsfw
            self.persons[pid] = person
            return pid

    def add_community(self, name: str, *, title: str | None = None, nsfw: bool = False) -> int:
        with self._lock:
            cid = self._next("community")
            self.communities[cid] = Community(
                cid, name, title or name, f"{self.base}/c/{name}", _now(), nsfw
            )
            return cid

    def add_moderator(self, community_id: int, person_id: int) -> None:
        with self._lock:
            self.communities[community_id].moderators.append(person_id)

    def add_post(
        self,
        creator_id: int,
        *,
        community_id: int | None = None,
        name: str = "a post",
        url: str | None = None,
        thumbnail_url: str | None = None,
        body: str | None = None,
        alt_text: str | None = None,
        nsfw: bool = False,
    ) -> int:
        """A post; ``body`` may hold markdown image links (``![](https://…/pictrs/image/a.png)``)."""
        with self._lock:
            if community_id is None:
                community_id = next(iter(self.communities), None) or self.add_community("main")
            pid = self._next("post")
            self.posts[pid] = Post(
                pid,
                name,
                creator_id,
                community_id,
                f"{self.base}/post/{pid}",
                _now(),
                url=url,
                body=body,
                thumbnail_url=thumbnail_url,
                alt_text=alt_text,
                nsfw=nsfw,
            )
            return pid

    def add_comment(self, creator_id: int, post_id: int, content: str) -> int:
        with self._lock:
            cid = self._next("comment")
            self.comments[cid] = Comment(
                cid, creator_id, post_id, content, f"{self.base}/comment/{cid}", _now()
            )
            return cid

    def add_local_image(
        self,
        person_id: int,
        alias: str,
        delete_token: str | None = None,
        published: datetime | None = None,
    ) -> None:
        """A ``local_image`` row: ``alias`` uploaded by ``person_id``'s local user."""
        with self._lock:
            local_user_id = self.persons[person_id].local_user_id
            if local_user_id is None:
                raise ValueError(f"person {person_id} is not local")
            token = delete_token or secrets.token_hex(8)
            self.local_images.append(LocalImage(local_user_id, alias, token, published or _now()))

    def image_url(self, alias: str) -> str:
        """The URL Lemmy gives an upload: ``{instance}/pictrs/image/{alias}``."""
        return f"{self.base}/pictrs/image/{alias}"

    def token_for(self, person_id: int) -> str:
        """A valid JWT for ``person_id``'s local user, as ``/user/login`` would issue."""
        with self._lock:
            return self._issue(self.persons[person_id])

    # --- auth ---------------------------------------------------------------------------------

    def _issue(self, person: Person) -> str:
        assert person.local_user_id is not None
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
        claims = {
            "sub": str(person.local_user_id),
            "iss": urlsplit(self.base).netloc,
            "iat": int(time.time()),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(
            self.jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256
        ).digest()
        token = f"{header}.{payload}.{_b64(signature)}"
        self._tokens.setdefault(person.local_user_id, set()).add(token)
        return token

    def _person_for_token(self, token: str) -> Person | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(
            self.jwt_secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(_b64(expected), parts[2]):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            local_user_id = int(claims["sub"])
        except (ValueError, KeyError, TypeError):
            return None
        if token not in self._tokens.get(local_user_id, set()):
            return None
        person = next((p for p in self.persons.values() if p.local_user_id == local_user_id), None)
        if person is None or person.banned or person.deleted:  # check_user_valid
            return None
        return person

    def _viewer(self, request: web.Request) -> Person | None:
        header = request.headers.get("Authorization", "")
        token = (
            header[len("Bearer ") :] if header.startswith("Bearer ") else request.cookies.get("jwt")
        )
        return self._person_for_token(token) if token else None

    def _user(self, request: web.Request) -> Person:
        person = self._viewer(request)
        if person is None:
            raise LemmyError("incorrect_login", 401)
        return person

    def _admin(self, request: web.Request) -> Person:
        person = self._user(request)
        if not person.admin:
            raise LemmyError("not_an_admin")
        return person

    def _higher_admin_check(self, actor: Person, targets: list[int]) -> None:
        ids = {actor.id, *targets}
        admins = sorted(
            (p for p in self.persons.values() if p.id in ids and p.admin),
            key=lambda p: p.local_user_id or 0,
        )
        if admins and admins[0].id != actor.id:
            raise LemmyError("not_higher_admin")

    def _mod_or_admin(self, actor: Person, community_id: int) -> None:
        if not actor.admin and actor.id not in self.communities[community_id].moderators:
            raise LemmyError("not_a_moderator")

    # --- views ---------------------------------------------------------------------------------

    def _person_view(self, p: Person) -> dict[str, Any]:
        counts = {
            "person_id": p.id,
            "post_count": sum(1 for x in self.posts.values() if x.creator_id == p.id),
            "comment_count": sum(1 for x in self.comments.values() if x.creator_id == p.id),
        }
        return {"person": p.json(), "counts": counts, "is_admin": p.admin}

    def _community_view(self, c: Community) -> dict[str, Any]:
        posts = [p for p in self.posts.values() if p.community_id == c.id]
        counts = {
            "community_id": c.id,
            "subscribers": 0,
            "posts": len(posts),
            "comments": sum(
                1 for x in self.comments.values() if self.posts[x.post_id].community_id == c.id
            ),
            "published": ts(c.published),
            "users_active_day": 0,
            "users_active_week": 0,
            "users_active_month": 0,
            "users_active_half_year": 0,
            "subscribers_local": 0,
        }
        return {
            "community": c.json(),
            "subscribed": "NotSubscribed",
            "blocked": False,
            "counts": counts,
            "banned_from_community": False,
        }

    def _post_counts(self, p: Post) -> dict[str, Any]:
        comments = [c for c in self.comments.values() if c.post_id == p.id]
        newest = max((c.published for c in comments), default=p.published)
        return {
            "post_id": p.id,
            "comments": len(comments),
            "score": 1,
            "upvotes": 1,
            "downvotes": 0,
            "published": ts(p.published),
            "newest_comment_time": ts(newest),
        }

    def _post_view(self, p: Post, viewer: Person | None) -> dict[str, Any]:
        creator = self.persons[p.creator_id]
        community = self.communities[p.community_id]
        return _clean(
            {
                "post": p.json(),
                "creator": creator.json(),
                "community": community.json(),
                "creator_banned_from_community": False,
                "banned_from_community": False,
                "creator_is_moderator": creator.id in community.moderators,
                "creator_is_admin": creator.admin,
                "counts": self._post_counts(p),
                "subscribed": "NotSubscribed",
                "saved": False,
                "read": False,
                "hidden": False,
                "creator_blocked": False,
                "my_vote": None,
                "unread_comments": 0,
            }
        )

    def _comment_view(self, c: Comment, viewer: Person | None) -> dict[str, Any]:
        post = self.posts[c.post_id]
        creator = self.persons[c.creator_id]
        community = self.communities[post.community_id]
        blank = (c.deleted or c.removed) and not (viewer and viewer.admin)
        counts = {
            "comment_id": c.id,
            "score": 1,
            "upvotes": 1,
            "downvotes": 0,
            "published": ts(c.published),
            "child_count": 0,
        }
        return {
            "comment": c.json(blank=blank),
            "creator": creator.json(),
            "post": post.json(),
            "community": community.json(),
            "counts": counts,
            "creator_banned_from_community": False,
            "banned_from_community": False,
            "creator_is_moderator": creator.id in community.moderators,
            "creator_is_admin": creator.admin,
            "subscribed": "NotSubscribed",
            "saved": False,
            "creator_blocked": False,
        }

    def _report_view(self, r: Report, viewer: Person) -> dict[str, Any]:
        report = _clean(
            {
                "id": r.id,
                "creator_id": r.creator_id,
                f"{r.kind}_id": r.object_id,
                **r.original,
                "reason": r.reason,
                "resolved": r.resolved,
                "resolver_id": r.resolver_id,
                "published": ts(r.published),
                "updated": ts(r.updated) if r.updated else None,
            }
        )
        resolver = self.persons[r.resolver_id].json() if r.resolver_id else None
        if r.kind == "post":
            post = self.posts[r.object_id]
            view = self._post_view(post, viewer)
            return _clean(
                {
                    "post_report": report,
                    "post": post.json(),
                    "community": view["community"],
                    "creator": self.persons[r.creator_id].json(),
                    "post_creator": view["creator"],
                    "creator_banned_from_community": False,
                    "creator_is_moderator": view["creator_is_moderator"],
                    "creator_is_admin": view["creator_is_admin"],
                    "subscribed": "NotSubscribed",
                    "saved": False,
                    "read": False,
                    "hidden": False,
                    "creator_blocked": False,
                    "unread_comments": 0,
                    "counts": view["counts"],
                    "resolver": resolver,
                }
            )
        comment = self.comments[r.object_id]
        cview = self._comment_view(comment, viewer)
        return _clean(
            {
                "comment_report": report,
                "comment": cview["comment"],
                "post": cview["post"],
                "community": cview["community"],
                "creator": self.persons[r.creator_id].json(),
                "comment_creator": cview["creator"],
                "counts": cview["counts"],
                "creator_banned_from_community": False,
                "creator_is_moderator": cview["creator_is_moderator"],
                "creator_is_admin": cview["creator_is_admin"],
                "creator_blocked": False,
                "subscribed": "NotSubscribed",
                "saved": False,
                "resolver": resolver,
            }
        )

    # --- listing rules -----------------------------------------------------------------------

    def _visible_posts(
        self,
        viewer: Person | None,
        *,
        creator_id: int | None = None,
        community_id: int | None = None,
        show_nsfw: bool | None = None,
    ) -> list[Post]:
        """``PostQuery::list``'s filters, newest first."""
        out = []
        nsfw_ok = show_nsfw if show_nsfw is not None else bool(viewer and viewer.show_nsfw)
        for p in sorted(self.posts.values(), key=lambda x: x.id, reverse=True):
            community = self.communities[p.community_id]
            if community.deleted or (p.deleted and not (viewer and viewer.id == p.creator_id)):
                continue
            if not (creator_id is not None and viewer and viewer.admin) and (
                p.removed or community.removed
            ):
                continue
            if community.hidden:
                continue
            if community_id is not None and p.community_id != community_id:
                continue
            if creator_id is not None and p.creator_id != creator_id:
                continue
            if not nsfw_ok and (p.nsfw or community.nsfw):
                continue
            out.append(p)
        return out

    # --- pict-rs calls -------------------------------------------------------------------------

    async def _pictrs(self, method: str, url: str, **kw: Any) -> tuple[int | None, bytes, str]:
        """One request to pict-rs (or an image URL); recorded in ``pictrs_calls``."""
        status: int | None = None
        body = b""
        content_type = ""
        try:
            timeout = aiohttp.ClientTimeout(total=REQWEST_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, **kw) as response,
            ):
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        with self._lock:
            self.pictrs_calls.append(PictrsCall(method, url, status))
        return status, body, content_type

    async def _delete_user_images(self, person: Person) -> None:
        """``delete_local_user_images``: pict-rs delete-token URL per upload; rows stay."""
        if self.pictrs_url is None:
            return
        with self._lock:
            images = [i for i in self.local_images if i.local_user_id == person.local_user_id]
        for image in images:
            url = f"{self.pictrs_url}image/delete/{image.pictrs_delete_token}/{image.pictrs_alias}"
            await self._pictrs("DELETE", url)

    async def _purge_image(self, image_url: str) -> None:
        """``purge_image_from_pictrs``: GET the URL (must be ``image/*``), then purge the last
        path segment as an alias. Errors are ignored by the callers (``.ok()``)."""
        if self.pictrs_url is None or self.pictrs_api_key is None:
            return
        status, _, content_type = await self._pictrs("GET", image_url)
        if status is None or status >= 400 or not content_type.startswith("image/"):
            return
        alias = urlsplit(image_url).path.rstrip("/").rsplit("/", 1)[-1]
        headers = {"x-api-token": self.pictrs_api_key}
        await self._pictrs(
            "POST", f"{self.pictrs_url}internal/purge?alias={quote(alias)}", headers=headers
        )

    # --- app -----------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/user/login", self._login),
            ("POST", "/user/logout", self._logout),
            ("GET", "/site", self._get_site),
            ("GET", "/admin/list_all_media", self._list_all_media),
            ("GET", "/account/list_media", self._list_media),
            ("GET", "/search", self._search),
            ("POST", "/community", self._create_community),
            ("POST", "/post", self._create_post),
            ("POST", "/comment", self._create_comment),
            ("GET", "/post", self._get_post),
            ("GET", "/post/list", self._list_posts),
            ("POST", "/post/remove", self._remove_post),
            ("POST", "/post/report", self._create_post_report),
            ("PUT", "/post/report/resolve", self._resolve_post_report),
            ("GET", "/post/report/list", self._list_post_reports),
            ("GET", "/comment", self._get_comment),
            ("GET", "/comment/list", self._list_comments),
            ("POST", "/comment/remove", self._remove_comment),
            ("POST", "/comment/report", self._create_comment_report),
            ("PUT", "/comment/report/resolve", self._resolve_comment_report),
            ("GET", "/comment/report/list", self._list_comment_reports),
            ("POST", "/user/ban", self._ban_person),
            ("GET", "/user/banned", self._list_banned),
            ("POST", "/admin/purge/person", self._purge_person),
            ("POST", "/admin/purge/community", self._purge_community),
            ("POST", "/admin/purge/post", self._purge_post),
            ("POST", "/admin/purge/comment", self._purge_comment),
            ("POST", "/private_message", self._create_private_message),
            ("GET", "/private_message/list", self._list_private_messages),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, "/api/v3" + path, self._wrap(handler, method))
        app.router.add_post("/pictrs/image", self._upload_image)
        app.router.add_get("/pictrs/image/{filename}", self._full_res)
        app.router.add_get("/pictrs/image/delete/{token}/{filename}", self._delete_image)
        return app

    def _wrap(self, handler: Handler, method: str) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.StreamResponse:
            if method == "GET":
                data: dict[str, Any] = dict(request.query)
            else:
                try:
                    data = await request.json()
                except (ValueError, json.JSONDecodeError) as exc:
                    return web.Response(status=400, text=f"Json deserialize error: {exc}")
                if not isinstance(data, dict):
                    return web.Response(
                        status=400, text="Json deserialize error: expected an object"
                    )
            try:
                result = await handler(_Req(request, data))
            except LemmyError as exc:
                return exc.response()
            except KeyError as exc:
                return web.Response(
                    status=400, text=f"Json deserialize error: missing field `{exc.args[0]}`"
                )
            return json_response(result)

        return run

    # --- handlers ------------------------------------------------------------------------------

    async def _login(self, r: _Req) -> dict[str, Any]:
        name = str(r.data["username_or_email"])
        password = str(r.data["password"])
        with self._lock:
            person = next(
                (p for p in self.persons.values() if p.local_user_id and name in (p.name, p.email)),
                None,
            )
            if person is None or not secrets.compare_digest(person.password or "", password):
                raise LemmyError("incorrect_login", 401)
            if person.banned:
                raise LemmyError("site_ban")
            if person.deleted:
                raise LemmyError("deleted")
            jwt = self._issue(person)
        return {"jwt": jwt, "registration_created": False, "verify_email_sent": False}

    async def _logout(self, r: _Req) -> dict[str, Any]:
        person = self._user(r.request)
        header = r.request.headers.get("Authorization", "")
        with self._lock:
            self._tokens.get(person.local_user_id or 0, set()).discard(
                header.removeprefix("Bearer ")
            )
        return {"success": True}

    async def _get_site(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        with self._lock:
            admins = [self._person_view(p) for p in self.persons.values() if p.admin]
            site = {
                "id": 1,
                "name": self.site_name,
                "published": ts(self._started),
                "actor_id": f"{self.base}/",
                "last_refreshed_at": ts(self._started),
                "inbox_url": f"{self.base}/site_inbox",
                "public_key": "",
                "instance_id": 1,
            }
            local_site = {"id": 1, "site_id": 1, "reports_email_admins": self.reports_email_admins}
            my_user = None
            if viewer is not None:
                local_user = _clean(
                    {
                        "id": viewer.local_user_id,
                        "person_id": viewer.id,
                        "email": viewer.email,
                        "show_nsfw": viewer.show_nsfw,
                        "admin": viewer.admin,
                    }
                )
                my_user = {
                    "local_user_view": {
                        "local_user": local_user,
                        "person": viewer.json(),
                        "counts": self._person_view(viewer)["counts"],
                    },
                    "follows": [],
                    "moderates": [],
                    "community_blocks": [],
                    "instance_blocks": [],
                    "person_blocks": [],
                    "discussion_languages": [],
                }
        return _clean(
            {
                "site_view": {"site": site, "local_site": local_site},
                "admins": admins,
                "version": LEMMY_VERSION,
                "my_user": my_user,
                "all_languages": [],
                "discussion_languages": [],
                "taglines": [],
                "custom_emojis": [],
                "blocked_urls": [],
            }
        )

    def _media_views(self, images: list[LocalImage], page: Any, limit: Any) -> dict[str, Any]:
        lim, off = _limit_offset(_int(page), _int(limit))
        ordered = sorted(images, key=lambda i: i.published, reverse=True)[off : off + lim]
        views = []
        for image in ordered:
            person = next(
                p for p in self.persons.values() if p.local_user_id == image.local_user_id
            )
            local_image = {
                "local_user_id": image.local_user_id,
                "pictrs_alias": image.pictrs_alias,
                "pictrs_delete_token": image.pictrs_delete_token,
                "published": ts(image.published),
            }
            views.append({"local_image": local_image, "person": person.json()})
        return {"images": views}

    async def _list_all_media(self, r: _Req) -> dict[str, Any]:
        self._admin(r.request)
        with self._lock:
            return self._media_views(
                list(self.local_images), r.data.get("page"), r.data.get("limit")
            )

    async def _list_media(self, r: _Req) -> dict[str, Any]:
        person = self._user(r.request)
        with self._lock:
            mine = [i for i in self.local_images if i.local_user_id == person.local_user_id]
            return self._media_views(mine, r.data.get("page"), r.data.get("limit"))

    async def _search(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        q = str(r.data["q"])
        search_type = r.data.get("type_", "All")
        if search_type not in ("All", "Comments", "Posts", "Communities", "Users", "Url"):
            raise LemmyError("unknown", message=f"unknown variant `{search_type}`")
        lim, off = _limit_offset(_int(r.data.get("page")), _int(r.data.get("limit")))
        creator_id = _int(r.data.get("creator_id"))
        community_id = _int(r.data.get("community_id"))
        title_only = _bool(r.data.get("post_title_only")) or False
        posts: list[dict[str, Any]] = []
        comments: list[dict[str, Any]] = []
        users: list[dict[str, Any]] = []
        communities: list[dict[str, Any]] = []
        with self._lock:
            base = self._visible_posts(viewer, creator_id=creator_id, community_id=community_id)
            if search_type in ("All", "Posts"):
                hits = [
                    p
                    for p in base
                    if not (p.removed or p.deleted)
                    and (
                        _ilike(p.name, q)
                        or (not title_only and (_ilike(p.body, q) or _ilike(p.alt_text, q)))
                    )
                ]
                posts = [self._post_view(p, viewer) for p in hits[off : off + lim]]
            if search_type == "Url":
                hits = [p for p in base if p.url == q]
                posts = [self._post_view(p, viewer) for p in hits[off : off + lim]]
            if search_type in ("All", "Comments"):
                found = [
                    c
                    for c in sorted(self.comments.values(), key=lambda x: x.id, reverse=True)
                    if _ilike(c.content, q)
                    and not (c.removed or c.deleted)
                    and (creator_id is None or c.creator_id == creator_id)
                    and (community_id is None or self.posts[c.post_id].community_id == community_id)
                ]
                comments = [self._comment_view(c, viewer) for c in found[off : off + lim]]
            filtered = community_id is not None or creator_id is not None
            if search_type == "Users" or (search_type == "All" and not filtered):
                people = [p for p in self.persons.values() if _ilike(p.name, q) and not p.deleted]
                users = [self._person_view(p) for p in people[off : off + lim]]
            if search_type == "Communities" or (search_type == "All" and not filtered):
                found_c = [
                    c for c in self.communities.values() if _ilike(c.name, q) or _ilike(c.title, q)
                ]
                communities = [self._community_view(c) for c in found_c[off : off + lim]]
        return {
            "type_": search_type,
            "comments": comments,
            "posts": posts,
            "communities": communities,
            "users": users,
        }

    async def _create_community(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        name = str(r.data["name"])
        with self._lock:
            if any(c.name == name for c in self.communities.values()):
                raise LemmyError("community_already_exists")
            cid = self.add_community(
                name, title=str(r.data["title"]), nsfw=bool(r.data.get("nsfw"))
            )
            self.communities[cid].moderators.append(actor.id)
            return {
                "community_view": self._community_view(self.communities[cid]),
                "discussion_languages": [],
            }

    async def _create_post(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        with self._lock:
            community_id = _int(r.data["community_id"]) or 0
            if community_id not in self.communities:
                raise LemmyError("couldnt_find_community")
            pid = self.add_post(
                actor.id,
                community_id=community_id,
                name=str(r.data["name"]),
                url=r.data.get("url"),
                thumbnail_url=r.data.get("custom_thumbnail"),
                body=r.data.get("body"),
                alt_text=r.data.get("alt_text"),
                nsfw=bool(r.data.get("nsfw")),
            )
            return {"post_view": self._post_view(self.posts[pid], actor)}

    async def _create_comment(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        with self._lock:
            post_id = _int(r.data["post_id"]) or 0
            if post_id not in self.posts:
                raise LemmyError("couldnt_find_post")
            cid = self.add_comment(actor.id, post_id, str(r.data["content"]))
            return {
                "comment_view": self._comment_view(self.comments[cid], actor),
                "recipient_ids": [],
            }

    async def _get_post(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        post_id = _int(r.data.get("id"))
        with self._lock:
            post = self.posts.get(post_id or 0)
            if post is None:
                raise LemmyError("couldnt_find_post")
            hidden = (post.removed or post.deleted) and not (
                viewer and (viewer.admin or viewer.id == post.creator_id)
            )
            if hidden:
                raise LemmyError("couldnt_find_post")
            community = self.communities[post.community_id]
            return {
                "post_view": self._post_view(post, viewer),
                "community_view": self._community_view(community),
                "moderators": [],
                "cross_posts": [],
            }

    async def _list_posts(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        lim, off = _limit_offset(_int(r.data.get("page")), _int(r.data.get("limit")))
        with self._lock:
            found = self._visible_posts(
                viewer,
                community_id=_int(r.data.get("community_id")),
                show_nsfw=_bool(r.data.get("show_nsfw")),
            )
            return {"posts": [self._post_view(p, viewer) for p in found[off : off + lim]]}

    async def _get_comment(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        with self._lock:
            comment = self.comments.get(_int(r.data.get("id")) or 0)
            if comment is None:
                raise LemmyError("couldnt_find_comment")
            return {"comment_view": self._comment_view(comment, viewer), "recipient_ids": []}

    async def _list_comments(self, r: _Req) -> dict[str, Any]:
        viewer = self._viewer(r.request)
        lim, off = _limit_offset(_int(r.data.get("page")), _int(r.data.get("limit")))
        post_id = _int(r.data.get("post_id"))
        with self._lock:
            found = [
                c
                for c in sorted(self.comments.values(), key=lambda x: x.id, reverse=True)
                if post_id is None or c.post_id == post_id
            ]
            return {"comments": [self._comment_view(c, viewer) for c in found[off : off + lim]]}

    async def _remove_post(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        post_id, removed = _int(r.data["post_id"]), bool(r.data["removed"])
        with self._lock:
            post = self.posts.get(post_id or 0)
            if post is None:
                raise LemmyError("couldnt_find_post")
            self._mod_or_admin(actor, post.community_id)
            self._higher_admin_check(actor, [post.creator_id])
            post.removed, post.updated = removed, _now()
            self._resolve_all("post", post.id, actor.id)
            self._log("mod_remove_post", actor, post.id, r.data.get("reason"), removed=removed)
            return {"post_view": self._post_view(post, actor)}

    async def _remove_comment(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        comment_id, removed = _int(r.data["comment_id"]), bool(r.data["removed"])
        with self._lock:
            comment = self.comments.get(comment_id or 0)
            if comment is None:
                raise LemmyError("couldnt_find_comment")
            self._mod_or_admin(actor, self.posts[comment.post_id].community_id)
            self._higher_admin_check(actor, [comment.creator_id])
            comment.removed, comment.updated = removed, _now()
            self._resolve_all("comment", comment.id, actor.id)
            self._log(
                "mod_remove_comment", actor, comment.id, r.data.get("reason"), removed=removed
            )
            return {"comment_view": self._comment_view(comment, actor), "recipient_ids": []}

    def _resolve_all(self, kind: str, object_id: int, resolver: int) -> None:
        for report in self.reports.values():
            if report.kind == kind and report.object_id == object_id and not report.resolved:
                report.resolved, report.resolver_id, report.updated = True, resolver, _now()

    def _log(self, kind: str, actor: Person, target: int, reason: Any, **data: Any) -> None:
        self.modlog.append(ModlogEntry(kind, actor.id, target, reason, data))

    def _check_reason(self, reason: Any) -> str:
        text = str(reason).strip()
        if not text:
            raise LemmyError("report_reason_required")
        if len(text) > 1000:
            raise LemmyError("report_too_long")
        return text

    def _email_admins(self, reporter: Person, reported: Person) -> None:
        if self.reports_email_admins:
            for admin in [p for p in self.persons.values() if p.admin and p.email]:
                self.admin_emails.append(
                    {"to": admin.email, "reporter": reporter.name, "reported": reported.name}
                )

    async def _create_post_report(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        reason = self._check_reason(r.data["reason"])
        with self._lock:
            post = self.posts.get(_int(r.data["post_id"]) or 0)
            if post is None or (post.removed and not actor.admin):
                raise LemmyError("couldnt_find_post")
            if post.deleted or post.removed:
                raise LemmyError("deleted")
            original = _clean(
                {
                    "original_post_name": post.name,
                    "original_post_url": post.url,
                    "original_post_body": post.body,
                }
            )
            report = self._new_report("post", actor, post.id, original, reason)
            self._email_admins(actor, self.persons[post.creator_id])
            return {"post_report_view": self._report_view(report, actor)}

    async def _create_comment_report(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        reason = self._check_reason(r.data["reason"])
        with self._lock:
            comment = self.comments.get(_int(r.data["comment_id"]) or 0)
            if comment is None:
                raise LemmyError("couldnt_find_comment")
            if comment.deleted or comment.removed:
                raise LemmyError("deleted")
            original = {"original_comment_text": comment.content}
            report = self._new_report("comment", actor, comment.id, original, reason)
            self._email_admins(actor, self.persons[comment.creator_id])
            return {"comment_report_view": self._report_view(report, actor)}

    def _new_report(
        self, kind: str, actor: Person, object_id: int, original: dict[str, Any], reason: str
    ) -> Report:
        rid = self._next(f"{kind}_report")
        report = Report(rid, kind, actor.id, object_id, original, reason, _now())
        self.reports[(kind, rid)] = report
        return report

    async def _resolve(self, r: _Req, kind: str) -> dict[str, Any]:
        actor = self._user(r.request)
        with self._lock:
            report = self.reports.get((kind, _int(r.data["report_id"]) or 0))
            if report is None:
                raise LemmyError(f"couldnt_find_{kind}_report")
            obj = (
                self.posts[report.object_id]
                if kind == "post"
                else self.posts[self.comments[report.object_id].post_id]
            )
            self._mod_or_admin(actor, obj.community_id)
            report.resolved = bool(r.data["resolved"])
            report.resolver_id, report.updated = actor.id, _now()
            return {f"{kind}_report_view": self._report_view(report, actor)}

    async def _resolve_post_report(self, r: _Req) -> dict[str, Any]:
        return await self._resolve(r, "post")

    async def _resolve_comment_report(self, r: _Req) -> dict[str, Any]:
        return await self._resolve(r, "comment")

    def _list_reports(self, r: _Req, kind: str) -> dict[str, Any]:
        actor = self._user(r.request)
        lim, off = _limit_offset(_int(r.data.get("page")), _int(r.data.get("limit")))
        unresolved_only = _bool(r.data.get("unresolved_only")) or False
        object_id = _int(r.data.get(f"{kind}_id"))
        with self._lock:
            found = []
            for report in sorted(self.reports.values(), key=lambda x: x.published, reverse=True):
                if report.kind != kind or (unresolved_only and report.resolved):
                    continue
                if object_id is not None and report.object_id != object_id:
                    continue
                post_id = (
                    report.object_id if kind == "post" else self.comments[report.object_id].post_id
                )
                community = self.communities[self.posts[post_id].community_id]
                if actor.admin or actor.id in community.moderators:
                    found.append(report)
            return {
                f"{kind}_reports": [self._report_view(x, actor) for x in found[off : off + lim]]
            }

    async def _list_post_reports(self, r: _Req) -> dict[str, Any]:
        return self._list_reports(r, "post")

    async def _list_comment_reports(self, r: _Req) -> dict[str, Any]:
        return self._list_reports(r, "comment")

    async def _ban_person(self, r: _Req) -> dict[str, Any]:
        actor = self._admin(r.request)
        person_id, ban = _int(r.data["person_id"]) or 0, bool(r.data["ban"])
        expires_unix = _int(r.data.get("expires"))
        with self._lock:
            self._higher_admin_check(actor, [person_id])
            person = self.persons.get(person_id)
            if person is None:
                raise LemmyError("couldnt_update_user")
            expires = None
            if expires_unix is not None:
                when = datetime.fromtimestamp(expires_unix, UTC)
                if when < _now():
                    raise LemmyError("ban_expiration_in_past")
                expires = None if (when - _now()).days > 3650 else when
            person.banned, person.ban_expires = ban, expires
            if person.local_user_id is not None:  # LoginToken::invalidate_all
                self._tokens.pop(person.local_user_id, None)
            remove_data = bool(r.data.get("remove_data") or False)
            if remove_data:  # remove_user_data
                person.avatar = person.banner = person.bio = None
                for post in self.posts.values():
                    if post.creator_id == person.id:
                        post.removed = True
                for comment in self.comments.values():
                    if comment.creator_id == person.id:
                        comment.removed = True
            self._log(
                "mod_ban",
                actor,
                person.id,
                r.data.get("reason"),
                banned=ban,
                expires=ts(expires) if expires else None,
                remove_data=remove_data,
            )
            view = self._person_view(person)
        if remove_data:
            await self._delete_user_images(person)
        return {"person_view": view, "banned": ban}

    async def _list_banned(self, r: _Req) -> dict[str, Any]:
        self._admin(r.request)
        with self._lock:
            return {"banned": [self._person_view(p) for p in self.persons.values() if p.banned]}

    async def _purge_post(self, r: _Req) -> dict[str, Any]:
        actor = self._admin(r.request)
        with self._lock:
            post = self.posts.get(_int(r.data["post_id"]) or 0)
            if post is None:
                raise LemmyError("couldnt_find_post")
            self._higher_admin_check(actor, [post.creator_id])
        for image_url in (post.url, post.thumbnail_url):
            if image_url:
                await self._purge_image(image_url)
        with self._lock:
            self._delete_post(post.id)
            self._log(
                "admin_purge_post",
                actor,
                post.id,
                r.data.get("reason"),
                community_id=post.community_id,
            )
        return {"success": True}

    def _delete_post(self, post_id: int) -> None:
        self.posts.pop(post_id, None)
        for cid in [c.id for c in self.comments.values() if c.post_id == post_id]:
            self._delete_comment(cid)
        for key in [
            k for k, v in self.reports.items() if v.kind == "post" and v.object_id == post_id
        ]:
            del self.reports[key]

    def _delete_comment(self, comment_id: int) -> None:
        self.comments.pop(comment_id, None)
        for key in [
            k for k, v in self.reports.items() if v.kind == "comment" and v.object_id == comment_id
        ]:
            del self.reports[key]

    async def _purge_comment(self, r: _Req) -> dict[str, Any]:
        actor = self._admin(r.request)
        with self._lock:
            comment = self.comments.get(_int(r.data["comment_id"]) or 0)
            if comment is None:
                raise LemmyError("couldnt_find_comment")
            self._higher_admin_check(actor, [comment.creator_id])
            # Lemmy 0.19 does not purge images linked from the comment ("TODO" in purge/comment.rs)
            self._delete_comment(comment.id)
            self._log(
                "admin_purge_comment",
                actor,
                comment.id,
                r.data.get("reason"),
                post_id=comment.post_id,
            )
        return {"success": True}

    async def _purge_person(self, r: _Req) -> dict[str, Any]:
        actor = self._admin(r.request)
        with self._lock:
            person = self.persons.get(_int(r.data["person_id"]) or 0)
            if person is None:
                raise LemmyError("couldnt_find_person")
            self._higher_admin_check(actor, [person.id])
        await self._delete_user_images(person)
        with self._lock:  # purge_user_account, then mark banned
            for comment in self.comments.values():
                if comment.creator_id == person.id:
                    comment.content, comment.deleted, comment.updated = (
                        DELETED_REPLACEMENT_TEXT,
                        True,
                        _now(),
                    )
            for post in self.posts.values():
                if post.creator_id == person.id:
                    post.name = post.body = DELETED_REPLACEMENT_TEXT
                    post.url, post.deleted, post.updated = None, True, _now()
            for community in self.communities.values():
                if person.id in community.moderators:
                    community.moderators.remove(person.id)
            person.display_name = person.avatar = person.banner = person.bio = person.email = None
            person.deleted = person.banned = True
            if person.local_user_id is not None:
                self._tokens.pop(person.local_user_id, None)
            self._log("admin_purge_person", actor, person.id, r.data.get("reason"))
        return {"success": True}

    async def _purge_community(self, r: _Req) -> dict[str, Any]:
        actor = self._admin(r.request)
        with self._lock:
            community = self.communities.get(_int(r.data["community_id"]) or 0)
            if community is None:
                raise LemmyError("couldnt_find_community")
            urls = [
                u
                for p in self.posts.values()
                if p.community_id == community.id
                for u in (p.url,)
                if u
            ]
        for image_url in urls:
            await self._purge_image(image_url)
        with self._lock:
            for pid in [p.id for p in self.posts.values() if p.community_id == community.id]:
                self._delete_post(pid)
            del self.communities[community.id]
            self._log("admin_purge_community", actor, community.id, r.data.get("reason"))
        return {"success": True}

    async def _create_private_message(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        with self._lock:
            recipient = self.persons.get(_int(r.data["recipient_id"]) or 0)
            if recipient is None:
                raise LemmyError("couldnt_find_person")
            mid = self._next("private_message")
            message = PrivateMessage(
                mid,
                actor.id,
                recipient.id,
                str(r.data["content"]),
                _now(),
                f"{self.base}/private_message/{mid}",
            )
            self.private_messages.append(message)
            return {"private_message_view": self._pm_view(message)}

    def _pm_view(self, m: PrivateMessage) -> dict[str, Any]:
        private_message = {
            "id": m.id,
            "creator_id": m.creator_id,
            "recipient_id": m.recipient_id,
            "content": m.content,
            "deleted": False,
            "read": False,
            "published": ts(m.published),
            "ap_id": m.ap_id,
            "local": True,
            "removed": False,
        }
        return {
            "private_message": private_message,
            "creator": self.persons[m.creator_id].json(),
            "recipient": self.persons[m.recipient_id].json(),
        }

    async def _list_private_messages(self, r: _Req) -> dict[str, Any]:
        actor = self._user(r.request)
        lim, off = _limit_offset(_int(r.data.get("page")), _int(r.data.get("limit")))
        with self._lock:
            mine = [
                m
                for m in reversed(self.private_messages)
                if actor.id in (m.creator_id, m.recipient_id)
            ]
            return {"private_messages": [self._pm_view(m) for m in mine[off : off + lim]]}

    # --- /pictrs (crates/routes/src/images.rs) --------------------------------------------------

    async def _upload_image(self, request: web.Request) -> web.StreamResponse:
        person = self._viewer(request)
        if person is None:
            return LemmyError("incorrect_login", 401).response()
        if self.pictrs_url is None:
            return LemmyError("unknown", message="images_disabled").response()  # pictrs_config()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "accept-encoding")
        }
        body = await request.read()
        status, raw, _ = await self._pictrs(
            "POST", f"{self.pictrs_url}image", data=body, headers=headers
        )
        if status is None:
            return LemmyError("unknown", message="pict-rs unreachable").response()
        answer = json.loads(raw)
        files = answer.get("files")
        with self._lock:
            for f in files or []:
                assert person.local_user_id is not None
                self.local_images.append(
                    LocalImage(person.local_user_id, f["file"], f["delete_token"], _now())
                )
        # Lemmy re-serialises pict-rs's answer as PictrsResponse {files, msg}: "code" is dropped
        return json_response({"files": files, "msg": answer.get("msg", "")}, status=status)

    async def _full_res(self, request: web.Request) -> web.StreamResponse:
        if self.pictrs_url is None:
            return web.Response(status=404)
        name = request.match_info["filename"]
        fmt, thumbnail = request.query.get("format"), request.query.get("thumbnail")
        if fmt is None and thumbnail is None:
            url = f"{self.pictrs_url}image/original/{name}"
        else:
            ext = fmt or name.rsplit(".", 1)[-1]
            url = f"{self.pictrs_url}image/process.{ext}?src={name}"
            if thumbnail is not None:
                url += f"&thumbnail={thumbnail}"
        status, data, content_type = await self._pictrs("GET", url)
        if status is None or status == 404:
            return web.Response(status=404)
        return web.Response(status=status, body=data, headers={"Content-Type": content_type})

    async def _delete_image(self, request: web.Request) -> web.StreamResponse:
        person = self._viewer(request)
        if person is None:
            return LemmyError("incorrect_login", 401).response()
        alias = request.match_info["filename"]
        with self._lock:
            image = next(
                (
                    i
                    for i in self.local_images
                    if i.pictrs_alias == alias
                    and (person.admin or i.local_user_id == person.local_user_id)
                ),
                None,
            )
            if image is None:
                return LemmyError("unknown", 404, "Record not found").response()
            self.local_images.remove(image)
        if self.pictrs_url is not None:
            await self._pictrs(
                "DELETE", f"{self.pictrs_url}image/delete/{image.pictrs_delete_token}/{alias}"
            )
        return web.Response(status=204)


@dataclass
class _Req:
    """A parsed API call: the request and its query (GET) or JSON body (others)."""

    request: web.Request
    data: dict[str, Any]
