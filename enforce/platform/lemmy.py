"""Lemmy 0.19 (API v3) with an admin account: who uploaded an image, what uses it, and acting.

- Uploader: ``GET /api/v3/admin/list_all_media`` lists ``local_image`` rows (alias, local
  user, person) newest first, but reaches only the 5,000 newest uploads (page ≤ 100 ×
  limit ≤ 50). :class:`UploadIndex` keeps what it read in the state store, so uploads seen
  once stay known after they fall out of the listing.
- Usage: ``GET /api/v3/search`` — ``type_=Url`` finds posts whose ``url`` is exactly the
  image's URL, ``type_=Posts`` / ``Comments`` find the alias inside post bodies and
  comments. Search never looks at ``thumbnail_url``, avatars or banners, leaves out
  removed and deleted content, and shows NSFW posts only when the searching account has
  "show NSFW" on.
- Acting: reports (``/post/report``, ``/comment/report``), removal (``/post/remove``,
  ``/comment/remove``), purge (``/admin/purge/post``, ``/admin/purge/comment``), ban
  (``/user/ban``), and their undoing where Lemmy has one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from enforce.platform.http import JsonApi, PlatformError, error_code, json_of
from enforce.platform.settings import LemmySettings
from pipeline.state.sqlite import SqliteState

log = logging.getLogger(__name__)

SYSTEM = "Lemmy"
MEDIA_PAGE = 50
MEDIA_PAGES = 100  # list_all_media refuses page > 100
SEARCH_PAGE = 50
_CHECKPOINT = "platform.lemmy.uploads"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS platform_lemmy_uploads (
        alias TEXT PRIMARY KEY, person_id INTEGER NOT NULL, person_name TEXT NOT NULL,
        published TEXT NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class Uploader:
    """The Lemmy person whose local user uploaded an alias."""

    person_id: int
    name: str
    published: str


@dataclass(frozen=True, slots=True)
class PostHit:
    """A post that uses the image."""

    id: int
    creator_id: int
    creator_name: str
    how: str  # "url" or "body"


@dataclass(frozen=True, slots=True)
class CommentHit:
    """A comment that uses the image."""

    id: int
    post_id: int
    creator_id: int
    creator_name: str


@dataclass
class Usage:
    """Posts and comments that use any of an image's aliases."""

    posts: dict[int, PostHit] = field(default_factory=dict)
    comments: dict[int, CommentHit] = field(default_factory=dict)


def _normal_time(value: Any) -> str:
    """Lemmy's times (fraction only when non-zero) in one spelling, so text order is time
    order."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class LemmyClient:
    """Lemmy's API as the admin account; logs in lazily and again when the token expires."""

    def __init__(self, settings: LemmySettings) -> None:
        assert settings.url is not None
        self.settings = settings
        self.api = JsonApi(SYSTEM, settings.url, timeout_s=settings.timeout_s)
        self._jwt = settings.jwt.get_secret_value() if settings.jwt else None
        self._login_lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.api.aclose()

    @property
    def site(self) -> str:
        """Lemmy's public address (post URLs, links)."""
        return self.settings.site

    def image_url(self, alias: str) -> str:
        """The URL Lemmy gives an upload: ``{site}/pictrs/image/{alias}``."""
        return f"{self.site}/pictrs/image/{alias}"

    async def _login(self) -> str:
        s = self.settings
        if not (s.username and s.password):
            raise PlatformError(
                f"{SYSTEM} refused the configured jwt (expired or logged out): set a new "
                "enforce.platform.lemmy.jwt, or username and password"
            )
        response = await self.api.send(
            "POST",
            "/api/v3/user/login",
            json_body={
                "username_or_email": s.username,
                "password": s.password.get_secret_value(),
            },
        )
        if response.status_code != 200:
            raise self.api.failure(
                f"login as {s.username}",
                response,
                "check enforce.platform.lemmy.username/password (an account with two-factor "
                "login needs a jwt instead)",
            )
        token = json_of(response, SYSTEM, "login").get("jwt")
        if not token:
            raise PlatformError(
                f"{SYSTEM} login as {s.username} gave no token (is the account's email "
                "verified and its registration approved?)"
            )
        return str(token)

    async def _token(self, stale: str | None = None) -> str:
        async with self._login_lock:
            if self._jwt is None or (self._jwt == stale and self.settings.password):
                self._jwt = await self._login()
            return self._jwt

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """An authenticated call; logs in again once when Lemmy says the token is not valid."""
        token = await self._token()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}"}
            if method == "GET":
                response = await self.api.send(
                    method, f"/api/v3{path}", params=body, headers=headers
                )
            else:
                response = await self.api.send(
                    method, f"/api/v3{path}", json_body=body, headers=headers
                )
            if response.status_code == 401 and attempt == 1 and self.settings.password:
                token = await self._token(stale=token)
                continue
            if response.status_code != 200:
                code = error_code(response)
                hint = ""
                if code in ("not_an_admin", "not_a_moderator", "incorrect_login"):
                    hint = "the account in enforce.platform.lemmy must be an instance admin"
                raise self.api.failure(f"{method} {path}", response, hint)
            return json_of(response, SYSTEM, path)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading -----------------------------------------------------------------------

    async def media_page(self, page: int) -> list[tuple[str, Uploader]]:
        """One page of ``list_all_media`` (newest first): (alias, uploader)."""
        body = await self.call("GET", "/admin/list_all_media", {"page": page, "limit": MEDIA_PAGE})
        out = []
        for view in body.get("images") or []:
            image, person = view.get("local_image") or {}, view.get("person") or {}
            if image.get("pictrs_alias") and person.get("id") is not None:
                out.append(
                    (
                        str(image["pictrs_alias"]),
                        Uploader(
                            int(person["id"]),
                            str(person.get("name", "")),
                            _normal_time(image.get("published")),
                        ),
                    )
                )
        return out

    async def usage(self, aliases: list[str], pages: int) -> Usage:
        """Posts and comments that use any of ``aliases`` (see the module doc for limits)."""
        found = Usage()
        for alias in aliases:
            url = self.image_url(alias)
            for view in await self._search(url, "Url", "posts", pages):
                self._add_post(found, view, "url")
            for view in await self._search(alias, "Posts", "posts", pages):
                post = view.get("post") or {}
                if alias in (post.get("body") or "") + (post.get("alt_text") or ""):
                    self._add_post(found, view, "body")
                elif alias in (post.get("url") or ""):
                    self._add_post(found, view, "url")
            for view in await self._search(alias, "Comments", "comments", pages):
                comment = view.get("comment") or {}
                if alias in (comment.get("content") or ""):
                    creator = view.get("creator") or {}
                    cid = int(comment["id"])
                    found.comments[cid] = CommentHit(
                        cid,
                        int(comment.get("post_id", 0)),
                        int(creator.get("id", comment.get("creator_id", 0))),
                        str(creator.get("name", "")),
                    )
        return found

    @staticmethod
    def _add_post(found: Usage, view: dict[str, Any], how: str) -> None:
        post, creator = view.get("post") or {}, view.get("creator") or {}
        pid = int(post["id"])
        if pid not in found.posts:
            found.posts[pid] = PostHit(
                pid,
                int(creator.get("id", post.get("creator_id", 0))),
                str(creator.get("name", "")),
                how,
            )

    async def _search(self, q: str, type_: str, key: str, pages: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for page in range(1, pages + 1):
            body = await self.call(
                "GET",
                "/search",
                {"q": q, "type_": type_, "page": page, "limit": SEARCH_PAGE, "listing_type": "All"},
            )
            batch = body.get(key) or []
            results.extend(batch)
            if len(batch) < SEARCH_PAGE:
                break
        return results

    # -- acting ------------------------------------------------------------------------

    async def report(self, kind: str, object_id: int, reason: str) -> int:
        """Report a post or comment; returns the report id."""
        body = await self.call(
            "POST", f"/{kind}/report", {f"{kind}_id": object_id, "reason": reason[:1000]}
        )
        view = body.get(f"{kind}_report_view") or {}
        return int((view.get(f"{kind}_report") or {}).get("id", 0))

    async def resolve_report(self, kind: str, report_id: int) -> None:
        """Mark a report resolved."""
        await self.call(
            "PUT", f"/{kind}/report/resolve", {"report_id": report_id, "resolved": True}
        )

    async def remove(self, kind: str, object_id: int, removed: bool, reason: str) -> None:
        """Remove (or restore) a post or comment."""
        await self.call(
            "POST",
            f"/{kind}/remove",
            {f"{kind}_id": object_id, "removed": removed, "reason": reason[:1000]},
        )

    async def purge(self, kind: str, object_id: int, reason: str) -> None:
        """Purge a post or comment for good."""
        await self.call(
            "POST", f"/admin/purge/{kind}", {f"{kind}_id": object_id, "reason": reason[:1000]}
        )

    async def ban(
        self, person_id: int, ban: bool, reason: str, *, remove_data: bool, days: int | None
    ) -> None:
        """Ban (or unban) a person from the instance."""
        body: dict[str, Any] = {
            "person_id": person_id,
            "ban": ban,
            "remove_data": remove_data if ban else False,
            "reason": reason[:1000],
        }
        if ban and days is not None:
            body["expires"] = int((datetime.now(UTC) + timedelta(days=days)).timestamp())
        await self.call("POST", "/user/ban", body)


class UploadIndex:
    """alias → uploader, from ``list_all_media``, kept in the state store."""

    def __init__(self, client: LemmyClient, state: SqliteState) -> None:
        self.client = client
        self.state = state
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the table."""
        for statement in _SCHEMA:
            await self.state.execute(statement)

    async def uploader(self, aliases: list[str]) -> tuple[str, Uploader] | None:
        """The uploader of the first of ``aliases`` Lemmy knows, reading new uploads first."""
        async with self._lock:
            hit = await self._get(aliases)
            if hit is None:
                await self._refresh()
                hit = await self._get(aliases)
            return hit

    async def _get(self, aliases: list[str]) -> tuple[str, Uploader] | None:
        for alias in aliases:
            row = await self.state.fetchone(
                "SELECT person_id, person_name, published FROM platform_lemmy_uploads "
                "WHERE alias = ?",
                (alias,),
            )
            if row is not None:
                return alias, Uploader(int(row[0]), str(row[1]), str(row[2]))
        return None

    async def _refresh(self) -> None:
        """Read uploads newest first, down to the newest one already read (at most 5,000)."""
        newest = await self.state.get_checkpoint(_CHECKPOINT)
        top: str | None = None
        for page in range(1, MEDIA_PAGES + 1):
            items = await self.client.media_page(page)
            if not items:
                break
            top = top or items[0][1].published
            fresh = [(a, u) for a, u in items if newest is None or u.published >= newest]
            await self.state.executemany(
                "INSERT INTO platform_lemmy_uploads (alias, person_id, person_name, published) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(alias) DO UPDATE SET "
                "person_id = excluded.person_id, person_name = excluded.person_name",
                [(a, u.person_id, u.name, u.published) for a, u in fresh],
            )
            if len(fresh) < len(items) or len(items) < MEDIA_PAGE:
                break
        if top is not None and (newest is None or top > newest):
            await self.state.set_checkpoint(_CHECKPOINT, top)
