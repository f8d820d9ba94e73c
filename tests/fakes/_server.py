"""The HTTP plumbing every fake shares: an aiohttp app served on a free loopback port.

Each fake runs its own event loop in a daemon thread, so it works the same from plain and
async tests and never competes with the test's own loop. State lives behind one lock per
fake: handlers run on the fake's thread, seeding and inspection helpers on the test's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer serialised compactly, the way the Rust and Ruby servers write them."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class FakeServer:
    """Base class: subclasses build the aiohttp application; this class runs it.

    Use as a context manager (``with FakePictrs(...) as pictrs:``) or call ``start()`` and
    ``stop()``. ``url`` is ``http://127.0.0.1:<port>`` once started.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        """The fake's routes; subclasses override."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._runner is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self.run(self._start_site())
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            self._loop = self._thread = None
            raise
        return self

    async def _start_site(self) -> None:
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            self.run(runner.cleanup(), timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the fake's own loop from the test's thread and return its result."""
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
