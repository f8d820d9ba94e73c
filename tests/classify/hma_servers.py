"""HMA stand-ins the FakeHMA does not cover: one behind a token-checking proxy, and
addresses that never answer (a listening socket nobody accepts on) or refuse."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from tests.fakes import FakeHMA


class TokenHMA(FakeHMA):
    """FakeHMA behind what a deployment puts in front of HMA: 401 without the token."""

    def __init__(self, header: str, value: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.header, self.value = header, value
        self.refused = 0

    def build_app(self) -> web.Application:
        app = super().build_app()

        @web.middleware
        async def check(request: web.Request, handler: object) -> web.StreamResponse:
            if request.headers.get(self.header) != self.value:
                with self._lock:
                    self.refused += 1
                return web.json_response({"message": "unauthorized"}, status=401)
            return await handler(request)  # type: ignore[operator, no-any-return]

        app.middlewares.append(check)
        return app


@contextmanager
def silent_server() -> Iterator[str]:
    """A URL whose TCP connections complete but never get an answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def refused_url() -> str:
    """A URL nothing listens on (the port is closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
