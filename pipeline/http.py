"""Serve an ASGI app inside a role's event loop: the one uvicorn helper of pictguard.

The validate API, the ingest webhook receiver, the review console and every role's
``/metrics``/``/healthz``/``/readyz`` server run this way: :func:`serve_app` until the
role's stop event, :func:`start_app` in the background with a handle to close. The socket is bound
here first, because uvicorn answers a bind failure with ``sys.exit``, which would end the
whole process instead of printing which setting to change; and uvicorn's own signal
handling is off, because the runtime owns SIGTERM.

:class:`HttpLimits` bounds what a client can hold: connections (uvicorn's
``limit_concurrency``), idle keep-alive connections, and — which uvicorn does not do — the
time a request's headers and body may take and the size of its headers (slowloris: a
connection that trickles its headers or body would otherwise stay open for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.errors import PictguardError
from pipeline.settings import SettingsError

log = logging.getLogger(__name__)


class ListenError(SettingsError):
    """The server cannot listen where the settings say."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may hold of the server; ``None`` leaves a limit off."""

    # Open connections and requests in progress; beyond, uvicorn answers 503 at once.
    max_connections: int | None = None
    # An idle keep-alive connection is closed after this.
    keepalive_timeout_s: int = 5
    # From a connection's start (or its previous answer) to the end of the request's
    # headers; then the connection is closed (408).
    header_timeout_s: float | None = None
    # From the end of the headers to the end of the body; then 408 and closed.
    body_timeout_s: float | None = None
    # Request line and headers; beyond, 431 and closed.
    max_header_bytes: int = 64 * 1024


class BodyTooLarge(PictguardError):
    """A request body above its cap: 413."""


def too_large(cap: int, key: str = "message") -> Response:
    """The 413 answer for a body above ``cap`` bytes (``{key: "body larger than …"}``)."""
    return JSONResponse({key: f"body larger than {cap} bytes"}, status_code=413)


class CapBodies:
    """ASGI middleware: a request body above ``cap`` bytes gets 413 and is never read on.

    The one capped body reader for JSON and event bodies (the webhook receiver, the admin
    endpoints): a declared ``Content-Length`` above the cap is refused before the app runs;
    a body that grows past it while read is refused there (the app's read raises
    :class:`BodyTooLarge`, its own answer is dropped). Starlette and FastAPI read a JSON
    body before any dependency runs, the token check included, so without this anyone could
    make a server hold an endless body in memory. Paths under ``exempt`` pass untouched
    (the validate API's uploads, read with their own memory budget).
    """

    def __init__(
        self, app: ASGIApp, cap: int, *, exempt: str | None = None, key: str = "message"
    ) -> None:
        self.app = app
        self.cap = cap
        self.exempt = exempt
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt and scope["path"].startswith(self.exempt)):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await too_large(self.cap, self.key)(scope, receive, send)
            return
        received = 0
        refused = False

        async def capped() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.cap and not refused:
                refused = True
                await too_large(self.cap, self.key)(scope, receive, send)
                raise BodyTooLarge  # stops the reading; the rest is never pulled
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:  # the app's own answer to the aborted read is dropped
                await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, capped, unless_refused)


def _guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with header and body deadlines and a header size cap."""

    class Guarded(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _in_headers = True

        def _arm(self, seconds: float | None, status: int, why: str) -> None:
            self._disarm()
            if seconds is not None:
                self._timer = self.loop.call_later(seconds, self._refuse, status, why)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, status: int, why: str) -> None:
            """Answer ``status`` if no answer started, and close the connection."""
            self._timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
                body = why.encode()
                self.transport.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                    % (status, reason[status], len(body), body)
                )
            log.debug("closing a connection: %s", why)
            self.transport.close()

        def _awaiting_headers(self) -> None:
            self._in_headers = True
            self._header_bytes = 0
            self._arm(limits.header_timeout_s, 408, "request headers took too long")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._awaiting_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > limits.max_header_bytes:
                self._refuse(431, f"request headers larger than {limits.max_header_bytes} bytes")

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._arm(limits.body_timeout_s, 408, "request body took too long")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Unless a pipelined request (headers already in) is being answered now.
            if not self.transport.is_closing() and self.cycle.response_complete:
                self._awaiting_headers()

    return Guarded


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, what: str, hint: str, error: type[ListenError]) -> socket.socket:
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise error(
            f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}) — check {hint} "
            "and that nothing else uses the port"
        ) from exc
    sock.setblocking(False)
    return sock


class RunningServer:
    """An app being served in the background (:func:`start_app`); :meth:`close` stops it."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket):
        self._server = server
        self._task = task
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    async def wait(self) -> None:
        """Until the server stops by itself (an error is raised here)."""
        await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop serving; requests in flight finish first (idempotent)."""
        self._server.should_exit = True
        # gather: a failure of the server was raised by wait() already; a cancellation of
        # the caller still cancels it.
        await asyncio.gather(self._task, return_exceptions=True)
        self._sock.close()


async def start_app(
    app: Any,
    host: str,
    port: int,
    *,
    what: str,
    hint: str,
    limits: HttpLimits | None = None,
    error: type[ListenError] = ListenError,
) -> RunningServer:
    """Serve ``app`` on ``host:port`` in the background (port 0 picks a free one).

    ``what`` names the server and ``hint`` the settings to check in the ``error`` raised
    when it cannot listen.
    """
    limits = limits or HttpLimits()
    protocol: Callable[..., Any] = _guarded_protocol(limits)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from any local
    # peer; the apps decide themselves whom to believe.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        http=protocol,  # type: ignore[arg-type]
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keepalive_timeout_s,
    )
    sock = _listen(host, port, what, hint, error)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=what)
    while not server.started:
        if task.done():
            sock.close()
            raise error(f"{what} on {host}:{port} did not start: {task.exception()!r}")
        await asyncio.sleep(0.01)
    running = RunningServer(server, task, sock)
    log.info("%s listening on http://%s:%d", what, host, running.port)
    return running


async def serve_app(
    app: Any,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    what: str,
    hint: str,
    started: asyncio.Event | None = None,
    limits: HttpLimits | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set; requests in flight finish first.

    ``what`` names the server and ``hint`` the settings to check in error messages.
    """
    running = await start_app(app, host, port, what=what, hint=hint, limits=limits)
    try:
        if started is not None:
            started.set()
        serving = asyncio.create_task(running.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if serving.done():
            serving.result()
        else:
            serving.cancel()
    finally:
        await running.close()
