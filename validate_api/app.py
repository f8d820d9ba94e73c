"""The FastAPI app: pict-rs external validation, a JSON check API, health, admin.

An upload holds memory from its first body byte to its answer, so it is counted from
there: in flight (``api.max_inflight``) before its body is read, and its bytes against
``api.max_buffered_bytes`` across all uploads. Slow headers and bodies are cut by the
server (``pipeline.http.HttpLimits``).

Every answer carries where its time went, per step: ``timings_ms`` in the JSON and the
same in a ``Server-Timing`` header, which adds ``reply`` (encoding the answer) and
``total`` (from the request reaching the app to the answer built).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.errors import PictguardError
from pipeline.health import Health
from pipeline.http import BodyTooLarge, CapBodies
from pipeline.metrics import SyncOutcome, metrics_endpoint, record_sync_outcome, watch_api
from pipeline.telemetry import instrument_app
from pipeline.tokens import bearer_token
from validate_api.auth import Unauthorized, authorise
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


# Where the outermost middleware notes when a request reached the app.
_ARRIVED = "pictguard.arrived"


class BuffersFull(PictguardError):
    """The bodies held across uploads reached ``api.max_buffered_bytes``: 503."""


class ClientGone(PictguardError):
    """The client closed the connection (or the server cut it) before the body ended."""


@dataclass(eq=False, slots=True)
class _Reading:
    """One body being received: the task reading it and the bytes it holds."""

    task: asyncio.Task[Any] | None
    held: int = 0
    evicted: bool = False


@dataclass
class BodyBuffers:
    """Bytes of upload bodies held in memory across all uploads, capped.

    An upload takes its bytes as they arrive and gives them back with its answer. Past the
    cap, the upload still being received that holds the most gives way — it is answered
    503 — so stalled big uploads (or a slowloris) cannot starve the small ones.
    """

    cap: int
    held: int = 0
    peak: int = 0
    _reading: set[_Reading] = field(default_factory=set)

    def start(self) -> _Reading:
        reading = _Reading(asyncio.current_task())
        self._reading.add(reading)
        return reading

    def take(self, reading: _Reading, n: int) -> None:
        """Count ``n`` more bytes of ``reading``; raises :class:`BuffersFull` when it is the
        one that must give way."""
        reading.held += n
        self.held += n
        while self.held > self.cap and self._reading:
            victim = max(self._reading, key=attrgetter("held"))
            self._reading.discard(victim)
            self.held -= victim.held
            victim.held = 0
            if victim is reading:
                raise BuffersFull
            victim.evicted = True
            if victim.task is not None:
                victim.task.cancel()  # its read ends in BuffersFull, see read_body
        self.peak = max(self.peak, self.held)

    def received(self, reading: _Reading) -> None:
        """The whole body is in: it can no longer be made to give way."""
        self._reading.discard(reading)

    def release(self, reading: _Reading) -> None:
        self._reading.discard(reading)
        self.held -= reading.held
        reading.held = 0


async def read_body(receive: Receive, cap: int, buffers: BodyBuffers) -> tuple[bytes, _Reading]:
    """The whole body, counted against ``buffers``; the caller releases the reading.

    Raises :class:`BodyTooLarge` past ``cap`` (the rest is never read), :class:`BuffersFull`
    when this upload must give way, :class:`ClientGone` when the connection ended first.
    """
    reading = buffers.start()
    chunks: list[bytes] = []
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                if reading.held + len(chunk) > cap:
                    raise BodyTooLarge
                buffers.take(reading, len(chunk))
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if reading.evicted and task is not None and task.uncancel() == 0:
            raise BuffersFull from None
        raise
    except BaseException:
        buffers.release(reading)
        raise
    finally:
        buffers.received(reading)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), reading


class NoteArrival:
    """ASGI middleware, outermost: notes when a request reached the app (``route`` timing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_ARRIVED] = time.perf_counter()
        await self.app(scope, receive, send)


@dataclass
class ApiContext:
    settings: ApiSettings
    validator: Validator
    # The role's readiness checks; create_app adds the API's own and serves /readyz.
    health: Health
    admin_router: APIRouter | None = None
    # More endpoints the composition root mounts (the remote workers' API).
    routers: Sequence[APIRouter] = ()
    # Keeps the bytes of rejected pict-rs uploads (None: they are not kept).
    evidence: EvidenceSender | None = None
    # Set by create_app: the bodies held across uploads (for tests and metrics).
    buffers: BodyBuffers | None = None


# No client means every pict-rs call is refused: said at start-up and by /readyz, never
# only by 401s that pict-rs turns into failed uploads.
NO_CLIENTS = (
    "no api.clients configured, so every upload validation call is refused with 401: set "
    'PICTGUARD_API__CLIENTS=\'[{"id": "lemmy", "cidrs": ["172.16.0.0/12"]}]\' (or api.clients '
    "in the config file) and point pict-rs at http://pictguard:8080/api/v1/scan/lemmy"
)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers or None)


# Refusals that leave the rest of a body unread close the connection: the client stops
# sending at once instead of pushing the rest into a connection that discards it.
_CLOSE = {"Connection": "close"}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _server_timing(timings: dict[str, float]) -> str:
    """``Server-Timing`` (RFC: ``name;dur=ms``); names carry no ``:``."""
    return ", ".join(f"{name.replace(':', '.')};dur={ms:g}" for name, ms in timings.items())


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
    buffers = BodyBuffers(settings.max_buffered_bytes)
    ctx.buffers = buffers

    async def overloaded(request: Request, why: str | None = None) -> Outcome | JSONResponse:
        """Above a limit: per api.on_overload, 503 (the connection is closed, the rest of
        the body never read) or 200 unscanned once the body is drained."""
        record_sync_outcome(SyncOutcome.OVERLOADED)
        if settings.on_overload == "reject":
            return _error(
                503,
                f"overloaded ({why}), retry later" if why else "overloaded, retry later",
                **{"Retry-After": str(settings.retry_after_s)},
                **_CLOSE,
            )
        try:  # api.on_overload=accept: 200 unscanned, as pictrs-safety's "Queue Full"
            await _drain(request, settings.max_body_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes", **_CLOSE)
        except ClientDisconnect:  # gone, or cut by api.body_timeout_s: nobody to answer
            return _error(400, "the body ended early", **_CLOSE)
        return ctx.validator.overloaded(why)

    async def run(
        request: Request, client_id: str, token: str | None, *, keep: bool = False
    ) -> Outcome | JSONResponse:
        started = time.perf_counter()
        timings = {"route": _ms(started - request.scope.get(_ARRIVED, started))}
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
            return _error(401, "unknown or unauthorised client")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes", **_CLOSE)
        validator = ctx.validator
        if validator.inflight >= settings.max_inflight:
            return await overloaded(request)
        # In flight from here: its body takes memory from the first byte on.
        validator.inflight += 1
        reading = None
        try:
            receiving = time.perf_counter()
            try:
                data, reading = await read_body(request.receive, settings.max_body_bytes, buffers)
            except BodyTooLarge:
                return _error(413, f"body larger than {settings.max_body_bytes} bytes", **_CLOSE)
            except BuffersFull:
                return await overloaded(request, "upload buffers full")
            except ClientGone:
                return _error(400, "the body ended early", **_CLOSE)
            timings["read"] = _ms(time.perf_counter() - receiving)
            outcome = await validator.validate(data, request.headers.get("content-type"))
            if keep and ctx.evidence is not None and ctx.evidence.wanted(outcome):
                await ctx.evidence.send(
                    outcome,
                    data,
                    request.headers.get("content-type"),
                    caller.client_id if caller else None,
                )
        finally:
            validator.inflight -= 1
            if reading is not None:
                buffers.release(reading)
        outcome.timings_ms = {**timings, **outcome.timings_ms}
        record_sync_outcome(_SYNC_OUTCOME[outcome.path], outcome.elapsed_ms / 1000)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
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
        return outcome

    def answer(request: Request, outcome: Outcome, status: int, *, full: bool) -> JSONResponse:
        arrived = request.scope.get(_ARRIVED)
        encoding = time.perf_counter()
        if arrived is not None:
            outcome.timings_ms["total"] = _ms(encoding - arrived)
        response = JSONResponse(outcome.body(full=full), status_code=status)
        timings = dict(outcome.timings_ms)
        timings["reply"] = _ms(time.perf_counter() - encoding)
        if arrived is not None:
            timings["total"] = _ms(time.perf_counter() - arrived)
        response.headers["Server-Timing"] = _server_timing(timings)
        return response

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
        return answer(request, result, _status(result), full=False)

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
        return answer(request, result, 200, full=True)

    health = ctx.health
    health.add(NO_CLIENTS, lambda: bool(settings.clients))
    health.add_degraded(ctx.validator.classifier.reason)
    app.add_api_route("/healthz", health.healthz, methods=["GET"], summary="The process is up")
    app.add_api_route(
        "/readyz",
        health.readyz,
        methods=["GET"],
        summary="Bus, reply routing and models are ready",
        description='200 `{"status": "ready"}`, with `degraded` saying why when uploads '
        "get no verdict (classifier path down): readiness stays up then, as uploads are "
        'answered per api.on_timeout. 503 `{"status": "not ready", "message": …}` names '
        "what is missing.",
        responses={503: {}},
    )

    if ctx.admin_router is not None:
        app.include_router(ctx.admin_router)
    for router in ctx.routers:
        app.include_router(router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(CapBodies, cap=MAX_OTHER_BODY_BYTES, exempt="/api/v1/")
    app.add_middleware(NoteArrival)
    instrument_app(app)
    return app
