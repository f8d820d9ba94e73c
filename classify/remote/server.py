"""The worker API: HTTP endpoints remote workers call (they are never called themselves).

Mounted on the validate API. Two ways in, each with its own tokens:

* pictguard workers (``pictguard run classify --remote``): ``Authorization: Bearer``, see
  :mod:`classify.remote.protocol` — long-polled leases of up to ``max`` requests, the bytes
  per lease, results with full findings;
* fedi-safety workers: ``GET/POST /api/v1/pop`` with an ``apikey`` header, as
  pictrs-safety serves them — one image per poll, answered with ``is_csam``/``is_nsfw``.

A worker token opens these endpoints only; no other token opens them. Each worker has a
rate limit, may fetch and answer only its own live leases, and a revoked worker is refused.
Tokens never reach a log line, span or metric: refusals are counted by reason.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr, ValidationError

from classify.remote.dispatcher import Clock, Dispatcher, Refused, Unauthorized, Worker
from classify.remote.protocol import (
    CONTENT_PATH,
    LEASE_PATH,
    POP_PATH,
    VERDICTS_PATH,
    Answered,
    FediSafetyResult,
    LeaseCall,
    Leased,
    LeasedJob,
    ResultsCall,
)
from classify.remote.settings import RemoteSettings, WorkerProtocol
from pipeline import metrics
from pipeline.errors import PictguardError
from pipeline.events import Lane
from pipeline.tokens import secret_matches

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

# fedi-safety's answers are a few dozen bytes; a lease call's body a few more.
_SMALL_BODY = 16 * 1024


class TokenBucket:
    """``rate`` calls per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()

    def take(self) -> float:
        """0 if a call may go ahead now, else the seconds until one may."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Refusal(PictguardError):
    def __init__(self, response: Response) -> None:
        self.response = response


def _json(status_code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status_code, headers=headers or None)


async def _read(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _Refusal(_json(413, f"body larger than {cap} bytes"))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _Refusal(_json(413, f"body larger than {cap} bytes"))
    return bytes(body)


async def _parse(request: Request, model: type[M], cap: int) -> M:
    body = await _read(request, cap)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise _Refusal(_json(422, f"invalid {model.__name__}: {where}: {first['msg']}")) from None


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body the endpoint reads itself (capped before it is parsed)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def worker_router(
    dispatcher: Dispatcher,
    settings: RemoteSettings,
    *,
    admin_token: SecretStr | str | None = None,
) -> APIRouter:
    """The worker endpoints and ``/admin/workers`` (behind ``enforce.admin_token``)."""
    router = APIRouter(tags=["remote workers"])
    buckets = {
        worker_id: TokenBucket(settings.rate_per_s, settings.burst, dispatcher.clock)
        for worker_id in dispatcher.workers
    }

    def refuse_caller(exc: Unauthorized, protocol: WorkerProtocol) -> _Refusal:
        metrics.record_remote_refused(exc.reason)
        log.info("refused a worker API call: %s", exc)
        if protocol is WorkerProtocol.FEDI_SAFETY:
            return _Refusal(_json(403, "Access Denied"))  # what pictrs-safety answers
        return _Refusal(
            _json(401, "unknown, revoked or unauthorised worker", **{"WWW-Authenticate": "Bearer"})
        )

    def admit(token: str | None, protocol: WorkerProtocol, *, limited: bool = True) -> Worker:
        try:
            worker = dispatcher.authenticate(token, protocol)
        except Unauthorized as exc:
            raise refuse_caller(exc, protocol) from None
        if limited:
            wait = buckets[worker.id].take()
            if wait > 0:
                metrics.record_remote_refused("rate_limited")
                raise _Refusal(
                    _json(
                        429,
                        f"worker {worker.id}: more than {settings.rate_per_s:g} calls/s",
                        **{"Retry-After": str(math.ceil(wait))},
                    )
                )
        return worker

    bearer = HTTPBearer(auto_error=False)

    def token_of(credentials: HTTPAuthorizationCredentials | None) -> str | None:
        return credentials.credentials if credentials is not None else None

    async def answer_refusals(call: Any) -> Any:
        try:
            return await call
        except _Refusal as refusal:
            return refusal.response

    @router.post(
        LEASE_PATH,
        summary="Lease scan requests (long poll)",
        description="Up to `max` requests, sync lane first, waiting up to `wait_s` (capped at "
        "classify.remote.long_poll_s) for one. Answer each within `expires_in_s`.",
        response_model=Leased,
        responses={401: {}, 413: {}, 422: {}, 429: {}},
        openapi_extra=_json_body(LeaseCall),
    )
    async def lease(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Any:
        async def work() -> Leased:
            worker = admit(token_of(credentials), WorkerProtocol.PICTGUARD)
            call = await _parse(request, LeaseCall, _SMALL_BODY)
            leases = await dispatcher.lease(worker, call.max, call.wait_s)
            return Leased(
                worker=worker.id,
                expires_in_s=settings.lease_s,
                jobs=[
                    LeasedJob(
                        lease=lease.id,
                        request_id=lease.job.request_id,
                        lane=lease.job.lane,
                        content_type=lease.job.content_type,
                        size=len(lease.job.data),
                        content=CONTENT_PATH.format(lease=lease.id),
                    )
                    for lease in leases
                ],
            )

        return await answer_refusals(work())

    @router.get(
        CONTENT_PATH,
        summary="The bytes of a leased request",
        responses={401: {}, 404: {}, 410: {}},
    )
    async def content(
        lease: str, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Any:
        async def work() -> Response:
            # Not rate limited: one download per leased request, bounded by the leases.
            worker = admit(token_of(credentials), WorkerProtocol.PICTGUARD, limited=False)
            found = dispatcher.content(worker, lease)
            if isinstance(found, Refused):
                return _not_yours(found)
            return Response(found.data, media_type=found.content_type or "application/octet-stream")

        return await answer_refusals(work())

    @router.post(
        VERDICTS_PATH,
        summary="Answer leased requests",
        description="Each result is accepted once, from the worker holding the live lease; "
        "the others are listed as refused with the reason.",
        response_model=Answered,
        responses={401: {}, 413: {}, 422: {}, 429: {}},
        openapi_extra=_json_body(ResultsCall),
    )
    async def verdicts(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Any:
        async def work() -> Answered:
            worker = admit(token_of(credentials), WorkerProtocol.PICTGUARD)
            call = await _parse(request, ResultsCall, settings.max_result_bytes)
            answered = Answered()
            for result in call.results:
                refused = dispatcher.answer(worker, result.lease, result.findings)
                if refused is None:
                    answered.accepted.append(result.lease)
                else:
                    answered.refused[result.lease] = refused.value
            return answered

        return await answer_refusals(work())

    @router.get(
        POP_PATH,
        summary="fedi-safety: pick up one image",
        description="204 nothing to do; 200 the image as an attachment, its name in "
        "Content-Disposition (answer under that name). Header `apikey`: the worker token.",
        responses={204: {}, 403: {}, 429: {}},
    )
    async def pop(apikey: Annotated[str | None, Header()] = None) -> Any:
        async def work() -> Response:
            worker = admit(apikey, WorkerProtocol.FEDI_SAFETY)
            dispatcher.expire()
            leases = dispatcher.take(worker, 1)
            if not leases:
                return Response(status_code=204)
            job = leases[0].job
            name = f"{leases[0].id}.{job.extension}"
            return Response(
                job.data,
                media_type=job.kind or "application/octet-stream",
                headers={"Content-Disposition": f"attachment; filename={name}"},
            )

        return await answer_refusals(work())

    @router.post(
        POP_PATH,
        summary="fedi-safety: answer for one image",
        description="JSON `{image, is_csam, is_nsfw}`: 201 taken; 404 no such image waiting "
        "(never leased, another worker's, or its lease ran out).",
        status_code=201,
        responses={403: {}, 404: {}, 422: {}, 429: {}},
        openapi_extra=_json_body(FediSafetyResult),
    )
    async def pop_answer(request: Request, apikey: Annotated[str | None, Header()] = None) -> Any:
        async def work() -> Response:
            worker = admit(apikey, WorkerProtocol.FEDI_SAFETY)
            result = await _parse(request, FediSafetyResult, _SMALL_BODY)
            # The name came back from Content-Disposition, split on its first '='.
            lease_id = result.image.strip().strip('"').split(".", 1)[0]
            findings = dispatcher.fedi_safety_findings(worker, result.is_csam, result.is_nsfw)
            refused = dispatcher.answer(worker, lease_id, findings)
            if refused is not None:
                return _json(404, f"No image found waiting for this result ({refused.value}).")
            return _json(201, "OK")

        return await answer_refusals(work())

    router.include_router(_admin_router(dispatcher, admin_token))
    return router


def _not_yours(refused: Refused) -> JSONResponse:
    if refused is Refused.EXPIRED:
        return _json(410, "lease expired; the request went back to the queue")
    return _json(404, "no such lease for this worker")


def _admin_router(dispatcher: Dispatcher, token: SecretStr | str | None) -> APIRouter:
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not secret:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "admin API disabled: set PICTGUARD_ENFORCE__ADMIN_TOKEN to enable it",
            )
        given = credentials.credentials if credentials is not None else None
        if not secret_matches(given, secret):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong admin token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/admin/workers", tags=["admin"], dependencies=[Depends(authorised)])

    @router.get("", summary="Remote workers: connected, leases held, revoked")
    async def workers() -> dict[str, Any]:
        now = dispatcher.clock()
        return {
            "queued": {lane.value: dispatcher.queued(lane) for lane in Lane},
            "workers": [
                {
                    "id": w.id,
                    "protocol": w.account.protocol.value,
                    "connected": dispatcher.connected(w),
                    "last_seen_s": None if w.last_seen is None else round(now - w.last_seen, 3),
                    "leases": len(w.leases),
                    "revoked": w.revoked,
                }
                for w in dispatcher.workers.values()
            ],
        }

    @router.post("/{worker_id}/revoke", summary="Refuse a worker until restart")
    async def revoke(worker_id: str) -> dict[str, Any]:
        if not dispatcher.revoke(worker_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker {worker_id!r}")
        return {
            "revoked": worker_id,
            "note": "until restart: set revoked: true for it in classify.remote.workers",
        }

    return router
