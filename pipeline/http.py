"""Serve an ASGI app inside a role's event loop, stopped by the role's stop event.

The validate API and the ingest webhook receiver both run this way. The socket is bound
here first, because uvicorn answers a bind failure with ``sys.exit``, which would end the
whole process instead of printing which setting to change; and uvicorn's own signal
handling is off, because the runtime owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from pipeline.settings import SettingsError

log = logging.getLogger(__name__)


class ListenError(SettingsError):
    """The server cannot listen where the settings say."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, what: str, hint: str) -> socket.socket:
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
        raise ListenError(
            f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}) — check {hint} "
            "and that nothing else uses the port"
        ) from exc
    sock.setblocking(False)
    return sock


async def serve_app(
    app: Any,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    what: str,
    hint: str,
    started: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set; requests in flight finish first.

    ``what`` names the server and ``hint`` the settings to check in error messages.
    """
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
    )
    sock = _listen(host, port, what, hint)
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise ListenError(f"{what} on {host}:{port} did not start")
            await asyncio.sleep(0.02)
        log.info("%s listening on http://%s:%d", what, host, port)
        if started is not None:
            started.set()
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        server.should_exit = True
        await serving
        sock.close()
