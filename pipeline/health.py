"""Liveness and readiness: the one ``/healthz`` and ``/readyz`` of every pictguard server.

A role registers readiness checks on :class:`Health` (bus started, models loaded, watches in
place) and reasons it works but is degraded (the classifier path down behind the validate
API). :meth:`Health.routes` answers the probes; the validate API mounts them on its own app,
the other roles on the small server :func:`start_metrics_server` runs beside ``/metrics``.

``/healthz`` is answered from the event loop, so a stuck loop fails the liveness probe.
``/readyz`` answers 200 ``{"status": "ready"}`` (with ``degraded`` saying why when a degraded
reason applies: readiness stays up) or 503 ``{"status": "not ready", "message": "not ready:
…"}`` naming every failing check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.http import HttpLimits, ListenError, RunningServer, start_app
from pipeline.metrics import metrics_endpoint
from pipeline.settings import MetricsSettings

log = logging.getLogger(__name__)


class Health:
    """Readiness checks a role registers (bus started, models loaded); liveness is implied."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self._groups: list[Callable[[], list[str]]] = []
        self._degraded: list[Callable[[], str | None]] = []

    def add(self, name: str, check: Callable[[], bool]) -> None:
        """``check`` must return True once ``name`` is ready (called on every probe)."""
        self._checks[name] = check

    def add_group(self, failing: Callable[[], list[str]]) -> None:
        """``failing`` names the checks of its own that fail now (e.g. another
        :meth:`not_ready`)."""
        self._groups.append(failing)

    def add_degraded(self, reason: Callable[[], str | None]) -> None:
        """``reason`` says why the process works but degraded (None: it is not); a degraded
        process stays ready."""
        self._degraded.append(reason)

    def not_ready(self) -> list[str]:
        """The checks that fail now (empty: ready)."""
        failing = [name for name, check in self._checks.items() if not _passes(check)]
        for group in self._groups:
            try:
                failing.extend(group())
            except Exception as exc:  # noqa: BLE001 — a broken check means not ready
                failing.append(f"health check failed: {exc!r}")
        return failing

    def degraded(self) -> str | None:
        """Why the process is degraded now, or None."""
        reasons = [r for r in (_reason(check) for check in self._degraded) if r]
        return "; ".join(reasons) or None

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process and its event loop are up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 when every check passes, else 503 naming those that fail."""
        failing = self.not_ready()
        if failing:
            message = "not ready: " + "; ".join(failing)
            return JSONResponse({"status": "not ready", "message": message}, status_code=503)
        degraded = self.degraded()
        body = {"status": "ready", "degraded": degraded} if degraded else {"status": "ready"}
        return JSONResponse(body)

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for ``/healthz`` and ``/readyz``."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]


def _passes(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 — a broken check means not ready, not a 500
        return False


def _reason(check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 — say it rather than answer 500
        return f"health check failed: {exc!r}"


class HealthPortError(ListenError):
    """``/metrics``, ``/healthz`` and ``/readyz`` cannot listen; the message says what to set."""


_HINT = (
    "PICTGUARD_METRICS__PORT (each role's default: ingest 9101, classify 9102, enforce 9103; "
    "0 picks any) and PICTGUARD_METRICS__HOST"
)


async def start_metrics_server(
    settings: MetricsSettings, health: Health | None = None, *, default_port: int = 0
) -> RunningServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``settings.host:settings.port``.

    ``default_port`` applies when ``metrics.port`` is unset; port 0 picks a free port (see
    ``RunningServer.port``). Raises :class:`HealthPortError` when it cannot listen: a role
    running without its probes and metrics would fail unnoticed.
    """
    health = health or Health()
    app = Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"]), *health.routes()])
    port = default_port if settings.port is None else settings.port
    return await start_app(
        app,
        settings.host,
        port,
        what="/metrics, /healthz and /readyz",
        hint=_HINT,
        # Probes and scrapes only: a handful of connections, answered at once.
        limits=HttpLimits(max_connections=64, header_timeout_s=10, body_timeout_s=10),
        error=HealthPortError,
    )
