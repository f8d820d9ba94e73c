"""The FastAPI app: pict-rs external validation, a JSON check API, health, admin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.errors import PictguardError
from pipeline.metrics import SyncOutcome, metrics_endpoint, record_sync_outcome, watch_api
from pipeline.telemetry import instrument_app
from pipeline.tokens import bearer_token
from validate_api.auth import Caller, Unauthorized, authorise
from validate_api.evidence import EvidenceSender
from validate_api.service import Outcome, Validator
from validate_api.settings import ApiSettings

log = logging.getLogger(__name__)

_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "The raw media bytes, as pict-rs streams them (not multipart)",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


_SYNC_OUTCOME = {
    "fast": SyncOutcome.CACHE_HIT,
    "model": SyncOutcome.ANSWERED,
    "timeout": SyncOutcome.TIMED_OUT,
    "unavailable": SyncOutcome.FAILED,
    "video": SyncOutcome.SKIPPED,
    "overload": SyncOutcome.OVERLOADED,
}


# Uploads (``/api/v1/…``) are capped by api.max_body_bytes; every other body (the admin
# endpoints' small JSON) by this.
MAX_OTHER_BODY_BYTES = 1024 * 1024


class BodyTooLarge(PictguardError):
    pass


class CapOtherBodies:
    """ASGI middleware: a body outside ``/api/v1/`` above ``cap`` bytes gets 413 at once.

    FastAPI reads a JSON body before any dependency runs, the admin token check included,
    so without this anyone could make the API hold an endless body in memory.
    """

    def __init__(self, app: ASGIApp, cap: int = MAX_OTHER_BODY_BYTES) -> None:
        self.app = app
        self.cap = cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await _error(413, f"body larger than {self.cap} bytes")(scope, receive, send)
            return
        received = 0
        refused = False

        async def capped() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.cap and not refused:
                refused = True
                await _error(413, f"body larger than {self.cap} bytes")(scope, receive, send)
                raise BodyTooLarge  # stops the reading; the rest is never pulled
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:  # the app's own answer to the aborted read is dropped
                await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, capped, unless_refused)


@dataclass
class ApiContext:
    settings: ApiSettings
    validator: Validator
    ready: Callable[[], bool]
    admin_router: APIRouter | None = None
    # More endpoints the composition root mounts (the remote workers' API).
    routers: Sequence[APIRouter] = ()
    # Why the process is not ready beyond the API itself (the role's health checks).
    not_ready: Callable[[], list[str]] = list
    # Keeps the bytes of rejected pict-rs uploads (None: they are not kept).
    evidence: EvidenceSender | None = None


# No client means every pict-rs call is refused: said at start-up and by /readyz, never
# only by 401s that pict-rs turns into failed uploads.
NO_CLIENTS = (
    "no api.clients configured, so every upload validation call is refused with 401: set "
    'PICTGUARD_API__CLIENTS=\'[{"id": "lemmy", "cidrs": ["172.16.0.0/12"]}]\' (or api.clients '
    "in the config file) and point pict-rs at http://pictguard:8080/api/v1/scan/lemmy"
)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers or None)


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, refusing early (from Content-Length, or while streaming) above ``cap``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge  # stop reading: the rest is never pulled off the socket
    return bytes(body)


async def _drain(request: Request, cap: int) -> int:
    """Read the body to its end without keeping it (an upload accepted unscanned): pict-rs
    gets its answer on a connection in good order. Returns its size; above ``cap``, raises."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
    return size


def _status(outcome: Outcome) -> int:
    if outcome.accepted:
        return 200
    if outcome.path == "video":
        return 415
    if outcome.path in ("timeout", "unavailable", "overload"):
        return 503
    if outcome.decision is not None and outcome.decision.value == "error":
        return 422
    return 406


def create_app(ctx: ApiContext) -> FastAPI:
    settings = ctx.settings
    if not settings.clients:
        log.warning(NO_CLIENTS)
    app = FastAPI(
        title="pictguard validate API",
        version="1",
        description="Synchronous upload validation for pict-rs (drop-in for pictrs-safety) "
        "and a JSON check API, answered from hash lists, the verdict cache and the models.",
    )

    watch_api(lambda: ctx.validator.inflight, lambda: ctx.validator.classifier.down)

    async def guarded(
        request: Request, client_id: str, token: str | None
    ) -> tuple[Caller | None, bytes | Outcome | JSONResponse]:
        try:
            caller = authorise(
                settings,
                client_id,
                token=token,
                peer=request.client.host if request.client else None,
                forwarded_for=request.headers.get("x-forwarded-for"),
            )
        except Unauthorized as exc:
            log.info("refused a scan request: %s", exc)
            return None, _error(401, "unknown or unauthorised client")
        if ctx.validator.inflight >= settings.max_inflight:
            record_sync_outcome(SyncOutcome.OVERLOADED)
            if settings.on_overload == "reject":
                return caller, _error(
                    503, "overloaded, retry later", **{"Retry-After": str(settings.retry_after_s)}
                )
            try:  # api.on_overload=accept: 200 unscanned, as pictrs-safety's "Queue Full"
                await _drain(request, settings.max_body_bytes)
            except BodyTooLarge:
                return caller, _error(413, f"body larger than {settings.max_body_bytes} bytes")
            return caller, ctx.validator.overloaded()
        try:
            data = await _read_capped(request, settings.max_body_bytes)
        except BodyTooLarge:
            return caller, _error(413, f"body larger than {settings.max_body_bytes} bytes")
        return caller, data

    async def run(
        request: Request, client_id: str, token: str | None, *, keep: bool = False
    ) -> Outcome | JSONResponse:
        caller, data = await guarded(request, client_id, token)
        if isinstance(data, (JSONResponse, Outcome)):
            return data
        ctx.validator.inflight += 1
        try:
            outcome = await ctx.validator.validate(data, request.headers.get("content-type"))
        finally:
            ctx.validator.inflight -= 1
        record_sync_outcome(_SYNC_OUTCOME[outcome.path], outcome.elapsed_ms / 1000)
        log.info(
            "validated an upload",
            extra={
                "client": caller.client_id if caller else None,
                "bytes": len(data),
                "decision": outcome.decision,
                "path": outcome.path,
                "accepted": outcome.accepted,
                "unverified": outcome.unverified,
                "elapsed_ms": round(outcome.elapsed_ms, 1),
            },
        )
        if keep and ctx.evidence is not None and ctx.evidence.wanted(outcome):
            await ctx.evidence.send(
                outcome,
                data,
                request.headers.get("content-type"),
                caller.client_id if caller else None,
            )
        return outcome

    @app.post(
        "/api/v1/scan/{client_id}",
        summary="pict-rs external validation",
        description="200 clean, or accepted (flagged decisions outside api.reject, or no "
        "verdict with an accept policy: `unverified` says why); 406 flagged and in api.reject "
        "(JSON: decision and verdict id), 401 unknown client, 413 too large, 503 overloaded "
        "(api.on_overload=reject) or unverifiable in time (api.on_timeout=reject).",
        openapi_extra=_RAW_BODY,
        responses={401: {}, 406: {}, 413: {}, 415: {}, 422: {}, 503: {}},
    )
    async def scan(
        request: Request,
        client_id: Annotated[str, Path(description="Configured client id, or IPADDR")],
        token: Annotated[str | None, Query(description="Client token, if configured")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        result = await run(request, client_id, token or bearer_token(authorization), keep=True)
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(result.body(full=False), status_code=_status(result))

    @app.post(
        "/api/v1/check",
        summary="Full verdict JSON for scripts and other software",
        description="Always 200 with the verdict (decision, scores, hashes) once authorised.",
        openapi_extra=_RAW_BODY,
        responses={401: {}, 413: {}, 503: {}},
    )
    async def check(
        request: Request,
        client_id: Annotated[str, Query(description="Configured client id")],
        token: Annotated[str | None, Query()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        result = await run(request, client_id, token or bearer_token(authorization))
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(result.body(), status_code=200)

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Bus, reply routing and models are ready",
        description='200 `{"status": "ready"}`, with `degraded` saying why when uploads '
        "get no verdict (classifier path down): readiness stays up then, as uploads are "
        "answered per api.on_timeout.",
        responses={503: {}},
    )
    async def readyz() -> Any:
        if not settings.clients:
            return _error(503, f"not ready: {NO_CLIENTS}")
        failing = ctx.not_ready()
        if ctx.ready() and not failing:
            degraded = ctx.validator.classifier.reason()
            return {"status": "ready", "degraded": degraded} if degraded else {"status": "ready"}
        return _error(503, "; ".join(["not ready", *failing]))

    if ctx.admin_router is not None:
        app.include_router(ctx.admin_router)
    for router in ctx.routers:
        app.include_router(router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(CapOtherBodies)
    instrument_app(app)
    return app
