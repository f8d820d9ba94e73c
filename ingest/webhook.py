"""HTTP receiver for bucket notifications: MinIO webhook targets, Ceph HTTP push, B2 webhooks.

Routes (each answers only once its secret is configured, otherwise 404):

- ``POST /hooks/minio``: MinIO ``notify_webhook`` with ``auth_token``; MinIO sends
  ``Authorization: Bearer <token>``. ``HEAD`` answers 200 without auth, because MinIO
  probes the endpoint that way to decide whether the target is online.
- ``POST /hooks/ceph?token=<token>``: a Ceph topic's ``push-endpoint``; Ceph cannot add
  headers, so the token rides in the URL (a Bearer header is accepted too).
- ``POST /hooks/b2``: a B2 event notification rule; the body's HMAC-SHA256 under the rule's
  signing secret arrives in ``X-Bz-Event-Notification-Signature: v1=<hex>``. That signature
  has no time in it, so events whose ``eventTimestamp`` is further than
  ``ingest.webhook.b2_max_age_s`` from now are dropped (403 when nothing else is left), and
  an ``eventId`` seen within that window is counted as a repeat and not scanned again.
- ``GET /healthz``.

Answers: missing credentials 401, wrong ones 403, a body over the size cap 413, a body that
is not a notification at all 400 (and a dead-letter record), otherwise 200 once the scan
requests (and any dead letter for a partly bad body) are acknowledged by the bus; 503 if the
bus did not acknowledge, so the store retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ingest.dedupe import DedupeWindow
from ingest.intake import Intake, Payload
from ingest.settings import IngestConfig
from ingest.sources import SourceName, normalizer
from ingest.sources.b2 import SIGNATURE_HEADER, ReplayGuard, signature_valid
from pipeline.bus.base import Bus, BusError
from pipeline.events import Source
from pipeline.health import Health
from pipeline.http import CapBodies, serve_app
from pipeline.storage.locations import Scope
from pipeline.tokens import bearer_token, secret_matches

log = logging.getLogger(__name__)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class WebhookReceiver:
    """The handlers behind the routes; one :class:`Intake` per source, one dedupe window."""

    def __init__(
        self,
        settings: IngestConfig,
        bus: Bus,
        *,
        dedupe: DedupeWindow | None = None,
        clock: Callable[[], float] = time.time,
        scope: Scope | None = None,
    ) -> None:
        self.settings = settings
        self.hook = settings.ingest.webhook
        self.replays = ReplayGuard(
            self.hook.b2_max_age_s, settings.ingest.dedupe_max_entries, clock=clock
        )
        window = dedupe or DedupeWindow(
            settings.ingest.dedupe_window_s, settings.ingest.dedupe_max_entries
        )
        sources: tuple[SourceName, ...] = ("minio", "ceph", "b2")
        self.intakes: dict[str, Intake] = {
            name: Intake(
                settings,
                bus,
                normalizer=normalizer(name),
                source=Source.EVENT,
                dedupe=window,
                scope=scope,
            )
            for name in sources
        }

    def routes(self) -> list[Route]:
        return [
            Route("/hooks/minio", self.minio, methods=["POST", "HEAD"]),
            Route("/hooks/ceph", self.ceph, methods=["POST"]),
            Route("/hooks/b2", self.b2, methods=["POST"]),
            Route("/healthz", Health().healthz, methods=["GET"]),
        ]

    async def minio(self, request: Request) -> Response:
        secret = self.hook.minio_token
        if secret is None:
            return _error(404, "MinIO webhook is off: set ingest.webhook.minio_token")
        if request.method == "HEAD":
            return Response(status_code=200)
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return _error(
                401, "Authorization: Bearer <token> required", **{"WWW-Authenticate": "Bearer"}
            )
        if not secret_matches(token, secret):
            return _error(403, "wrong token")
        return await self._receive(request, "minio")

    async def ceph(self, request: Request) -> Response:
        secret = self.hook.ceph_token
        if secret is None:
            return _error(404, "Ceph push endpoint is off: set ingest.webhook.ceph_token")
        token = request.query_params.get("token")
        if token is None:
            token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return _error(401, "token required: add ?token=<ceph_token> to the push-endpoint")
        if not secret_matches(token, secret):
            return _error(403, "wrong token")
        return await self._receive(request, "ceph")

    async def b2(self, request: Request) -> Response:
        secret = self.hook.b2_secret
        if secret is None:
            return _error(404, "B2 webhook is off: set ingest.webhook.b2_secret")
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            return _error(401, f"{SIGNATURE_HEADER} header required")
        body = await request.body()  # capped by CapBodies (ingest.webhook.max_body_bytes)
        if not signature_valid(secret.get_secret_value(), body, signature):
            return _error(403, "signature does not match the body under ingest.webhook.b2_secret")
        screened = self.replays.screen(body)
        if screened is None:  # not an events list: the normalizer dead-letters it
            return await self._submit(request, "b2", body)
        if screened.stale:
            log.warning(
                "webhook b2: %d event(s) with an eventTimestamp more than %g s from now dropped "
                "(a replayed delivery, or this host's clock is off)",
                screened.stale,
                self.hook.b2_max_age_s,
            )
        counts = {"repeats": screened.replayed, "stale": screened.stale}
        if screened.kept == 0:
            if screened.replayed == 0:
                return _error(
                    403,
                    f"eventTimestamp more than {self.hook.b2_max_age_s:g} s from now: a replay, "
                    "or a clock far off (ingest.webhook.b2_max_age_s)",
                )
            return JSONResponse(_answer(**counts))
        response = await self._submit(request, "b2", screened.body, counts)
        if response.status_code >= 500:
            self.replays.forget(screened.ids)  # B2 will deliver it again: not a replay
        return response

    async def _receive(self, request: Request, source: SourceName) -> Response:
        body = await request.body()  # capped by CapBodies (ingest.webhook.max_body_bytes)
        return await self._submit(request, source, body)

    async def _submit(
        self,
        request: Request,
        source: SourceName,
        body: bytes,
        counts: dict[str, int] | None = None,
    ) -> Response:
        payload = Payload(body=body, origin=f"webhook:{request.url.path}")
        try:
            (outcome,) = await self.intakes[source].submit([payload])
        except BusError as exc:
            log.error("webhook %s: bus did not acknowledge: %s", source, exc)
            return _error(503, "scan requests not acknowledged; retry later")
        if outcome.rejected:
            return _error(400, outcome.error or "not a notification")
        extra = dict(counts or {})
        answer = _answer(
            accepted=outcome.produced,
            repeats=outcome.repeats + extra.pop("repeats", 0),
            filtered=outcome.filtered,
            ignored=outcome.ignored,
            removed=outcome.removals,
            refused=outcome.refused,
            **extra,
        )
        if outcome.error is not None:
            answer["dead_lettered"] = outcome.error
        return JSONResponse(answer)


def _answer(**counts: int) -> dict[str, Any]:
    """A 200's body: what became of the delivery's events, every count present."""
    answer: dict[str, Any] = dict.fromkeys(
        ("accepted", "repeats", "filtered", "ignored", "removed", "refused"), 0
    )
    answer.update(counts)
    return answer


def create_webhook_app(
    settings: IngestConfig,
    bus: Bus,
    *,
    dedupe: DedupeWindow | None = None,
    clock: Callable[[], float] = time.time,
    scope: Scope | None = None,
) -> ASGIApp:
    """The ASGI app; the caller owns ``bus`` (started and stopped outside the app).

    ``clock`` (tests) is what B2 event timestamps are compared with; ``scope`` refuses
    (dead-letters) notifications about buckets outside it.
    """
    receiver = WebhookReceiver(settings, bus, dedupe=dedupe, clock=clock, scope=scope)
    hook = settings.ingest.webhook
    if not any((hook.minio_token, hook.ceph_token, hook.b2_secret)):
        log.warning(
            "ingest webhook has no endpoint on: set ingest.webhook.minio_token, ceph_token "
            "or b2_secret"
        )
    return CapBodies(
        Starlette(routes=receiver.routes()), settings.ingest.webhook.max_body_bytes, key="error"
    )


async def run_webhook(
    settings: IngestConfig,
    bus: Bus,
    stop: asyncio.Event,
    *,
    dedupe: DedupeWindow | None = None,
    started: asyncio.Event | None = None,
    scope: Scope | None = None,
) -> None:
    """Serve the receiver on ``ingest.webhook.host:port`` until ``stop`` is set."""
    hook = settings.ingest.webhook
    await serve_app(
        create_webhook_app(settings, bus, dedupe=dedupe, scope=scope),
        hook.host,
        hook.port,
        stop,
        what="webhook receiver",
        hint="PICTGUARD_INGEST__WEBHOOK__HOST/PORT",
        started=started,
    )
