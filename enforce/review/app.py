"""The review console's routes: ``/admin/review/…``, server-rendered, audited.

Mounted by the API beside the admin endpoints, and served alone by ``pictguard review``.
Every response carries a strict Content-Security-Policy (only this origin's own CSS, JS
and images), ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store`` (static files
excepted). Images reach the browser only through :mod:`enforce.review.images`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import SecretStr

from enforce.admin import AdminError, EnforceAdmin, EnforceContext
from enforce.records import Records
from enforce.review.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    FailedSignIns,
    Reviewers,
    SignInRefused,
    new_secret,
    same_secret,
)
from enforce.review.decisions import DECISIONS, DEFAULT_REASONS, decide
from enforce.review.images import (
    MAX_PREVIEW_BYTES,
    THUMB_PX,
    PreviewError,
    blurred_thumbnail,
    placeholder,
    revealed,
)
from enforce.review.items import ReviewItem, ReviewQueue
from enforce.review.journal import Journal, ReviewerPrefs, ReviewEvent, Session
from enforce.review.settings import ReviewSettings
from enforce.settings import EnforceSettings
from pipeline.events import utcnow
from pipeline.hashlists import HashListStore
from pipeline.storage import ObjectMissing, ObjectTooLarge, StorageError

log = logging.getLogger(__name__)

ContextFactory = Callable[[], Any]  # () -> async context manager of EnforceContext

CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_FORM_BYTES = 64 * 1024
PAGE_SIZE = 100
STATIC_FILES = {"review.css": "text/css", "review.js": "text/javascript"}
_THUMB_CACHE = 512


@dataclass
class Request_:
    """What one request opened: the context, the console's tables, the reviewer."""

    ctx: EnforceContext
    journal: Journal
    queue: ReviewQueue
    session: Session | None


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("enforce.review", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return env


def secure_headers(response: Response, *, cache: bool = False) -> Response:
    """The headers every console response carries."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "private, max-age=600" if cache else "no-store"
    return response


def review_router(
    context: ContextFactory,
    *,
    settings: EnforceSettings,
    admin_token: str | SecretStr | None = None,
    local_token: str | None = None,
    prefix: str = "/admin/review",
) -> APIRouter:
    """The console's routes over what ``context`` opens (see :func:`static_context`).

    ``admin_token`` (default ``settings.admin_token``) and ``settings.review.reviewers``
    sign in; ``local_token`` is the one-time token of a ``pictguard review`` run.
    """
    review: ReviewSettings = settings.review
    reviewers = Reviewers(
        review,
        admin_token if admin_token is not None else settings.admin_token,
        local_token=local_token,
    )
    failures = FailedSignIns()
    templates = _templates()
    thumbs: OrderedDict[tuple[str, str, bool, int], bytes] = OrderedDict()
    started: set[int] = set()
    router = APIRouter(prefix=prefix, include_in_schema=False)

    def url(path: str = "", **query: Any) -> str:
        tail = f"?{urlencode({k: v for k, v in query.items() if v is not None})}" if query else ""
        return f"{prefix}{path}{tail}"

    def page(template: str, code: int = 200, **values: Any) -> Response:
        html = templates.get_template(template).render(url=url, **values)
        return secure_headers(HTMLResponse(html, status_code=code))

    def message(title: str, text: str, code: int, session: Session | None = None) -> Response:
        return page(
            "message.html", code, title=title, text=text, session=session, nav="", counts=None
        )

    def see(location: str) -> Response:
        return secure_headers(RedirectResponse(location, status_code=303))

    @asynccontextmanager
    async def opened(request: Request) -> AsyncIterator[Request_]:
        async with context() as ctx:
            journal = Journal(ctx.state)
            if id(ctx.state) not in started:
                await journal.start()
                started.add(id(ctx.state))
            hashlists = HashListStore(ctx.hashlists or ctx.state.table("hashlists"))
            session = None
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                session = await journal.session(cookie, timedelta(minutes=review.idle_minutes))
            yield Request_(ctx, journal, ReviewQueue(ctx.state, journal, hashlists), session)

    def disabled() -> Response | None:
        if reviewers.enabled:
            return None
        return message(
            "Review console disabled",
            "Set PICTGUARD_ENFORCE__ADMIN_TOKEN, or reviewers in enforce.review.reviewers, "
            "to open the review console.",
            503,
        )

    async def form(request: Request) -> dict[str, list[str]] | None:
        """The urlencoded form, or None when it is larger than a console form can be."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def first(fields: dict[str, list[str]], name: str, default: str = "") -> str:
        values = fields.get(name)
        return values[0] if values else default

    def cross_site(request: Request) -> bool:
        """A POST another site made the browser send (belt and braces beside the token)."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            return True
        origin = request.headers.get("origin")
        if origin and origin != "null":
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            return origin != own
        return False

    async def posted(
        request: Request, r: Request_
    ) -> tuple[Session, dict[str, list[str]]] | Response:
        """The session and form of a POST that passed the session and CSRF checks."""
        if r.session is None:
            return message("Signed out", "Sign in again to continue.", 401)
        fields = await form(request)
        if fields is None:
            return message("Too large", "That form is larger than any console form.", 413)
        token = first(fields, CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if cross_site(request) or not same_secret(token, r.session.csrf):
            log.warning("review console: refused a POST without a valid CSRF token")
            return message(
                "Refused",
                "This request did not carry the page's security token. Reload the page and "
                "try again.",
                403,
                r.session,
            )
        return r.session, fields

    def cookie_secure(request: Request) -> bool:
        if review.secure_cookie is not None:
            return review.secure_cookie
        return request.url.scheme == "https"

    def peer(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def nav_counts(r: Request_) -> dict[str, int]:
        return await r.queue.counts()

    # -- sign-in -----------------------------------------------------------------------

    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        return see(url("/queue"))

    @router.get("/sign-in")
    async def sign_in_page(request: Request, error: str | None = None) -> Response:
        off = disabled()
        if off is not None:
            return off
        nonce = new_secret()
        response = page(
            "sign_in.html",
            csrf=nonce,
            needs_name=reviewers.needs_name,
            error=error,
            session=None,
            nav="",
            counts=None,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=1800,
            path=prefix,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        return response

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        off = disabled()
        if off is not None:
            return off
        fields = await form(request)
        if fields is None:
            return message("Too large", "That form is larger than any console form.", 413)
        if cross_site(request) or not same_secret(
            first(fields, CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)
        ):
            return message("Refused", "Reload the sign-in page and try again.", 403)
        who = peer(request)
        if failures.blocked(who):
            return message(
                "Too many attempts", "Too many wrong tokens from here; wait a few minutes.", 429
            )
        async with opened(request) as r:
            try:
                identity = reviewers.identify(first(fields, "token"), first(fields, "name"))
            except SignInRefused as exc:
                failures.failed(who)
                typed = first(fields, "name")[:64] or "?"
                await r.journal.record(
                    typed, ReviewEvent.SIGN_IN_FAILED, detail={"peer": who, "why": str(exc)}
                )
                return see(url("/sign-in", error=str(exc)))
            session_id, csrf = new_secret(), new_secret()
            lifetime = timedelta(hours=review.session_hours)
            session = await r.journal.open_session(
                session_id, identity.reviewer, identity.via, csrf, lifetime
            )
            await r.journal.record(
                identity.reviewer,
                ReviewEvent.SIGN_IN,
                detail={"peer": who, "via": identity.via},
                session=session,
            )
        response = see(url("/queue"))
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(lifetime.total_seconds()),
            path=prefix,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path=prefix)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        async with opened(request) as r:
            checked = await posted(request, r)
            if isinstance(checked, Response):
                return checked
            session, _ = checked
            await r.journal.end_session(session.session_hash)
            await r.journal.record(session.reviewer, ReviewEvent.SIGN_OUT, session=session)
        response = see(url("/sign-in"))
        response.delete_cookie(SESSION_COOKIE, path=prefix)
        return response

    # -- pages -------------------------------------------------------------------------

    async def signed_in(
        request: Request, work: Callable[[Request_, Session], Awaitable[Response]]
    ) -> Response:
        off = disabled()
        if off is not None:
            return off
        async with opened(request) as r:
            if r.session is None:
                return see(url("/sign-in"))
            return await work(r, r.session)

    @router.get("/queue")
    async def queue(request: Request, status: str = "open", start: int = 0) -> Response:
        if status not in ("open", "confirmed", "allowed", "deleted", "all"):
            status = "open"
        start = max(0, start)

        async def work(r: Request_, session: Session) -> Response:
            items = await r.queue.items(status, limit=PAGE_SIZE + 1, offset=start)  # type: ignore[arg-type]
            more = len(items) > PAGE_SIZE
            items = items[:PAGE_SIZE]
            await r.journal.record(
                session.reviewer,
                ReviewEvent.VIEW_QUEUE,
                detail={"status": status, "start": start, "items": [i.item_id for i in items]},
                session=session,
            )
            return page(
                "queue.html",
                session=session,
                items=items,
                status=status,
                start=start,
                more=more,
                page_size=PAGE_SIZE,
                counts=await nav_counts(r),
                nav=status,
                did=request.query_params.get("did"),
                n=request.query_params.get("n"),
                error=request.query_params.get("error"),
            )

        return await signed_in(request, work)

    @router.get("/items/{item_id}")
    async def item_page(request: Request, item_id: str, revealed_view: int = 0) -> Response:
        async def work(r: Request_, session: Session) -> Response:
            item = await r.queue.item(item_id)
            if item is None:
                return message("Not found", "No such item in the review queue.", 404, session)
            prefs = await r.journal.prefs(session.reviewer)
            reveal_live = bool(revealed_view) and await r.journal.revealed_since(
                session, item_id, utcnow() - timedelta(minutes=review.reveal_minutes)
            )
            await r.journal.record(
                session.reviewer,
                ReviewEvent.VIEW_ITEM,
                item_id=item.item_id,
                verdict_id=item.verdict_id,
                sha256=item.sha256,
                detail={"revealed": reveal_live},
                session=session,
            )
            before, after = await r.queue.neighbours(item_id)
            actions = await Records(r.ctx.state).actions(verdict_id=item.verdict_id, limit=100)
            reviews = await r.journal.audit(item_id=item.item_id, verdict_id=item.verdict_id)
            trail = sorted(
                [
                    (
                        row.at,
                        row.reviewer,
                        row.event,
                        row.detail.get("reason") or row.detail.get("summary") or "",
                    )
                    for row in reviews
                ]
                + [
                    (
                        a.created_at,
                        "pictguard",
                        f"{a.action.value} {a.outcome.value}",
                        a.detail or "",
                    )
                    for a in actions
                ],
                key=lambda entry: entry[0],
                reverse=True,
            )
            return page(
                "item.html",
                session=session,
                item=item,
                prefs=prefs,
                can_reveal=review.allow_reveal and not prefs.reveal_disabled,
                reveal_live=reveal_live,
                reveal_minutes=review.reveal_minutes,
                before=before,
                after=after,
                trail=trail,
                reasons=DEFAULT_REASONS,
                counts=await nav_counts(r),
                nav="",
                did=request.query_params.get("did"),
                error=request.query_params.get("error"),
            )

        return await signed_in(request, work)

    # -- images ------------------------------------------------------------------------

    async def image_bytes(r: Request_, item: ReviewItem) -> bytes | str:
        ref = item.bytes_ref
        if ref is None:
            return "nothing stored"
        try:
            return await r.ctx.stores.for_ref(ref).get(ref.key, max_bytes=MAX_PREVIEW_BYTES)
        except ObjectMissing:
            return "no longer stored"
        except ObjectTooLarge:
            return "too large to preview"
        except StorageError as exc:
            log.warning("review console: cannot read %s: %s", ref.id, exc)
            return "storage unavailable"

    def image(data: bytes) -> Response:
        response = Response(data, media_type="image/jpeg")
        response.headers["Content-Disposition"] = "inline"
        return secure_headers(response)

    @router.get("/items/{item_id}/thumb")
    async def thumbnail(request: Request, item_id: str, size: int = THUMB_PX) -> Response:
        size = min(max(size, 64), 384)
        async with opened(request) as r:
            if r.session is None:
                return secure_headers(Response(status_code=401))
            item = await r.queue.item(item_id)
            if item is None:
                return secure_headers(Response(status_code=404))
            prefs = await r.journal.prefs(r.session.reviewer)
            key = (item_id, prefs.blur, prefs.greyscale, size)
            cached = thumbs.get(key)
            if cached is not None:
                thumbs.move_to_end(key)
                return image(cached)
            data = await image_bytes(r, item)
        if isinstance(data, str):
            return image(await asyncio.to_thread(placeholder, data, size))
        try:
            out = await asyncio.to_thread(
                blurred_thumbnail, data, blur=prefs.blur, greyscale=prefs.greyscale, size=size
            )
        except PreviewError:
            return image(await asyncio.to_thread(placeholder, "no preview", size))
        thumbs[key] = out
        while len(thumbs) > _THUMB_CACHE:
            thumbs.popitem(last=False)
        return image(out)

    @router.post("/items/{item_id}/reveal")
    async def reveal(request: Request, item_id: str) -> Response:
        async with opened(request) as r:
            checked = await posted(request, r)
            if isinstance(checked, Response):
                return checked
            session, fields = checked
            item = await r.queue.item(item_id)
            if item is None:
                return message("Not found", "No such item in the review queue.", 404, session)
            prefs = await r.journal.prefs(session.reviewer)
            if not review.allow_reveal or prefs.reveal_disabled:
                return message(
                    "Reveal is off",
                    "Revealing images is turned off "
                    + ("in your settings." if prefs.reveal_disabled else "on this instance."),
                    403,
                    session,
                )
            if first(fields, "understand") != "yes":
                return see(url(f"/items/{item_id}", error="tick the box to reveal on purpose"))
            await r.journal.record(
                session.reviewer,
                ReviewEvent.REVEAL,
                item_id=item.item_id,
                verdict_id=item.verdict_id,
                sha256=item.sha256,
                detail={"minutes": review.reveal_minutes},
                session=session,
            )
        return see(url(f"/items/{item_id}", revealed_view=1))

    @router.get("/items/{item_id}/original")
    async def original(request: Request, item_id: str) -> Response:
        async with opened(request) as r:
            session = r.session
            if session is None:
                return secure_headers(Response(status_code=401))
            since = utcnow() - timedelta(minutes=review.reveal_minutes)
            prefs = await r.journal.prefs(session.reviewer)
            allowed = review.allow_reveal and not prefs.reveal_disabled
            if not allowed or not await r.journal.revealed_since(session, item_id, since):
                return secure_headers(
                    Response(
                        "reveal this item first (an audited action on its page)",
                        status_code=403,
                        media_type="text/plain",
                    )
                )
            item = await r.queue.item(item_id)
            if item is None:
                return secure_headers(Response(status_code=404))
            data = await image_bytes(r, item)
        if isinstance(data, str):
            return image(await asyncio.to_thread(placeholder, data, THUMB_PX))
        try:
            return image(await asyncio.to_thread(revealed, data, greyscale=prefs.greyscale))
        except PreviewError:
            return image(await asyncio.to_thread(placeholder, "no preview", THUMB_PX))

    # -- decisions ---------------------------------------------------------------------

    @router.post("/items/{item_id}/decide")
    async def decide_item(request: Request, item_id: str) -> Response:
        async with opened(request) as r:
            checked = await posted(request, r)
            if isinstance(checked, Response):
                return checked
            session, fields = checked
            choice = first(fields, "decision")
            if choice not in DECISIONS:
                return message("Unknown decision", "Choose confirm, allow or delete.", 400)
            item = await r.queue.item(item_id)
            if item is None:
                return message("Not found", "No such item in the review queue.", 404, session)
            _, after = await r.queue.neighbours(item_id)
            try:
                async with EnforceAdmin(r.ctx) as admin:
                    await decide(
                        admin,
                        r.journal,
                        item,
                        choice,  # type: ignore[arg-type]
                        reviewer=session.reviewer,
                        reason=first(fields, "reason"),
                        session=session,
                    )
            except (AdminError, StorageError) as exc:
                return see(url(f"/items/{item_id}", error=str(exc)))
        if after is not None:
            return see(url(f"/items/{after}", did=choice))
        return see(url("/queue", did=choice))

    @router.post("/bulk")
    async def bulk(request: Request) -> Response:
        async with opened(request) as r:
            checked = await posted(request, r)
            if isinstance(checked, Response):
                return checked
            session, fields = checked
            choice = first(fields, "decision")
            if choice not in ("confirm", "delete"):
                return message(
                    "Not in bulk", "Bulk decisions are confirm and delete, nothing else.", 400
                )
            wanted = fields.get("item", [])
            items = [i for i in await r.queue.items("open", limit=10_000) if i.item_id in wanted]
            if len(items) != len(set(wanted)) or not items:
                return see(url("/queue", error="some selected items are no longer open"))
            if any(not i.list_match for i in items):
                return see(
                    url(
                        "/queue",
                        error="bulk decisions are only for hash-list matches: "
                        "judge model verdicts one by one",
                    )
                )
            try:
                async with EnforceAdmin(r.ctx) as admin:
                    for item in items:
                        await decide(
                            admin,
                            r.journal,
                            item,
                            choice,  # type: ignore[arg-type]
                            reviewer=session.reviewer,
                            reason=first(fields, "reason") or f"bulk {choice}: hash-list match",
                            session=session,
                        )
            except (AdminError, StorageError) as exc:
                return see(url("/queue", error=str(exc)))
        return see(url("/queue", did=f"bulk-{choice}", n=len(items)))

    # -- settings and audit ------------------------------------------------------------

    @router.get("/settings")
    async def settings_page(request: Request) -> Response:
        async def work(r: Request_, session: Session) -> Response:
            return page(
                "settings.html",
                session=session,
                prefs=await r.journal.prefs(session.reviewer),
                instance_reveal=review.allow_reveal,
                counts=await nav_counts(r),
                nav="settings",
                saved=request.query_params.get("saved"),
            )

        return await signed_in(request, work)

    @router.post("/settings")
    async def save_settings(request: Request) -> Response:
        async with opened(request) as r:
            checked = await posted(request, r)
            if isinstance(checked, Response):
                return checked
            session, fields = checked
            blur = first(fields, "blur", "strong")
            prefs = ReviewerPrefs(
                blur=blur if blur in ("strong", "medium", "light") else "strong",  # type: ignore[arg-type]
                greyscale=first(fields, "greyscale") == "on",
                reveal_disabled=first(fields, "reveal_disabled") == "on",
            )
            await r.journal.save_prefs(session.reviewer, prefs)
            await r.journal.record(
                session.reviewer,
                ReviewEvent.SETTINGS,
                detail=prefs.model_dump(),
                session=session,
            )
        return see(url("/settings", saved=1))

    @router.get("/audit")
    async def audit_page(request: Request) -> Response:
        async def work(r: Request_, session: Session) -> Response:
            return page(
                "audit.html",
                session=session,
                rows=await r.journal.audit(limit=300),
                counts=await nav_counts(r),
                nav="audit",
            )

        return await signed_in(request, work)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            return secure_headers(Response(status_code=404))
        body = (resources.files("enforce.review") / "static" / name).read_bytes()
        return secure_headers(Response(body, media_type=media_type), cache=True)

    return router
