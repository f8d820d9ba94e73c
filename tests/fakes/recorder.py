"""RecordingEndpoint: a scriptable HTTP endpoint that records what it was sent.

Stands in for pictguard's validate API (or any webhook) when a test exercises a fake's
outgoing calls: it answers ``status`` to every request, or holds requests unanswered while
``hold`` is set (to drive a caller's timeout without sleeping).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tests.fakes._server import FakeServer


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    chunked: bool


class RecordingEndpoint(FakeServer):
    """Answers ``status`` to any path (or what ``respond`` returns for the recorded request);
    ``hold=True`` keeps requests waiting until stop."""

    def __init__(
        self,
        status: int = 200,
        *,
        hold: bool = False,
        respond: Callable[[Recorded], int] | None = None,
    ) -> None:
        super().__init__()
        self.status = status
        self.hold = hold
        self.respond = respond
        self.requests: list[Recorded] = []
        self._release: asyncio.Event | None = None

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            request.method,
            request.path_qs,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            request.headers.get("Transfer-Encoding", "").lower() == "chunked",
        )
        with self._lock:
            self.requests.append(recorded)
        if self.hold:
            self._release = self._release or asyncio.Event()
            await self._release.wait()
        return web.Response(status=self.respond(recorded) if self.respond else self.status)

    def stop(self) -> None:
        if self._release is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        super().stop()
