"""Clients that hold a server's resources: half-sent uploads and unfinished headers.

Raw sockets, because an HTTP client sends a whole request before it reads anything. A
"held" connection is one the server has not answered and not closed.
"""

from __future__ import annotations

import contextlib
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@dataclass
class HalfSent:
    """An upload that declared ``declared`` bytes and stopped after ``sent``."""

    sock: socket.socket
    sent: int = 0
    refused: bool = False  # the server answered or closed before all was sent
    answer: bytes = field(default=b"")

    def poll(self, timeout: float = 0.0) -> bytes | None:
        """The server's answer so far (b"" once closed without one), None if still held."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError:
            data = b""
        self.answer += data
        return self.answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def half_sent_upload(
    url: str, path: str, declared: int, send: int, chunk: int = 1 << 20
) -> HalfSent:
    """Declare ``declared`` bytes (Content-Length), send ``send`` of them, keep the socket."""
    sock = socket.create_connection(_address(url), timeout=30)
    upload = HalfSent(sock)
    piece = b"\xff\xd8" + b"\0" * (chunk - 2)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"User-Agent: pict-rs v0.5.0-main\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        while upload.sent < send:
            n = min(chunk, send - upload.sent)
            sock.sendall(piece[:n])
            upload.sent += n
    except OSError:  # answered (503) and closed while sending: the server let it go
        upload.refused = True
    return upload


def half_sent_uploads(url: str, path: str, count: int, declared: int, send: int) -> list[HalfSent]:
    """``count`` half-sent uploads, sent at once (one thread each)."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(half_sent_upload, url, path, declared, send) for _ in range(count)]
        return [future.result() for future in futures]


def unfinished_headers(url: str) -> socket.socket:
    """A request whose headers never end."""
    sock = socket.create_connection(_address(url), timeout=30)
    sock.sendall(b"POST /api/v1/scan/x HTTP/1.1\r\nHost: x\r\nContent-Ty")
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``timeout``; None if still open."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return received


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values
