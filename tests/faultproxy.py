"""A loopback HTTP proxy that injects faults between pictguard and an S3 server (moto).

pictguard is pointed at the proxy (``s3.endpoint_url``); the proxy forwards every request
to the real server unless a :class:`Fault` matches it, and then, per the fault's kind:

- ``status``: answers with an S3-style XML error (500 ``InternalError`` by default);
- ``timeout``: reads the request and never answers (until the proxy stops);
- ``reset``: reads the request and resets the connection (TCP RST);
- ``slow``: forwards the request and trickles the real answer's body, ``chunk`` bytes
  every ``delay_s`` seconds;
- ``cut``: forwards the request, sends the real headers and ``chunk`` bytes of the body,
  then resets the connection (a body that breaks off mid-way).

A fault matches by method and a regular expression searched in the path (with query), and
applies to its first ``times`` matching requests (``None``: all of them). Every request is
logged with the fault it got, so a test can count attempts per object.

    with FaultProxy(s3.endpoint) as proxy:
        proxy.add(Fault("status", method="GET", path="/bucket/key", times=2))
        ... settings with s3.endpoint_url = proxy.endpoint ...
        assert proxy.attempts("GET", "/bucket/key") == 3
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["status", "timeout", "reset", "slow", "cut"]
# Hop-by-hop headers are the proxy's own business, not forwarded either way.
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Fault:
    """One injected fault; see the module docstring for the kinds."""

    kind: FaultKind
    method: str | None = None
    path: str = ""
    times: int | None = None
    status: int = 500
    code: str = "InternalError"
    chunk: int = 1024
    delay_s: float = 0.05
    hits: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return self._pattern.search(path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy received and what it did with it."""

    method: str
    path: str
    fault: FaultKind | None
    at: float


class FaultProxy:
    """The proxy server; a context manager that starts and stops it."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def attempts(self, method: str, path: str) -> int:
        """How many ``method`` requests for a path containing ``path`` arrived."""
        return len([s for s in self.seen if s.method == method and path in s.path])

    def faulted(self, kind: FaultKind | None = None) -> int:
        return len([s for s in self.seen if s.fault is not None and kind in (None, s.fault)])

    def _choose(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.seen.append(Seen(method, path, fault.kind, time.monotonic()))
                    return fault
            self.seen.append(Seen(method, path, None, time.monotonic()))
            return None

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases the held "timeout" requests
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._choose(self.command, self.path)
            if fault is None:
                self._forward(body)
            elif fault.kind == "status":
                self._error(fault)
            elif fault.kind == "timeout":
                proxy.stopping.wait()
                self.close_connection = True
            elif fault.kind == "reset":
                self._reset()
            else:
                self._forward(body, fault)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        def _error(self, fault: Fault) -> None:
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                f"<Message>injected by the fault proxy</Message></Error>"
            ).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)

        def _reset(self) -> None:
            # SO_LINGER 0: close() sends RST instead of FIN, as a crashing peer would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.close()

        def _forward(self, body: bytes, fault: Fault | None = None) -> None:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
            finally:
                conn.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is None:
                self.wfile.write(data)
            elif fault.kind == "cut":
                self.wfile.write(data[: fault.chunk])
                self.wfile.flush()
                self._reset()
            else:  # slow
                for i in range(0, len(data), fault.chunk):
                    if proxy.stopping.is_set():
                        break
                    self.wfile.write(data[i : i + fault.chunk])
                    self.wfile.flush()
                    time.sleep(fault.delay_s)

    return Handler
