"""What a client can hold of `pictguard serve`: memory, upload slots, connections.

Real `pictguard serve` processes (hash lists only, so they start in seconds) and raw
sockets that stop half-way, as slowloris clients and stalled uploads do.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.media import photo_jpeg
from tests.servers import free_port, wait_until
from tests.validate_api.helpers import CLIENT, Stack, base_config, start, wait_ready
from tests.validate_api.slow_clients import (
    HalfSent,
    closed_by_server,
    half_sent_upload,
    half_sent_uploads,
    memory_kib,
    unfinished_headers,
)

MIB = 1024 * 1024
SCAN = f"/api/v1/scan/{CLIENT}"
PICTRS = {"Content-Type": "image/jpeg", "User-Agent": "pict-rs v0.5.0-main"}


def serve(tmp: Path, **api: object) -> Iterator[Stack]:
    port = free_port()
    config = base_config(tmp, port=port, **api)
    config["classify"] = {"classifiers": ["hashlist"]}
    config["log"] = {"level": "WARNING"}
    stack = Stack([f"http://127.0.0.1:{port}"], config)
    start(stack, ["serve"], config, tmp, "serve")
    wait_ready(stack)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Buffers capped at 96 MiB; slow headers cut after 3 s, slow bodies after 120 s."""
    yield from serve(
        tmp_path_factory.mktemp("roomy"),
        max_buffered_bytes=96 * MIB,
        header_timeout_s=3,
        body_timeout_s=120,
        max_header_bytes=8 * 1024,
    )


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two uploads at a time; a body must arrive within 10 s."""
    yield from serve(tmp_path_factory.mktemp("narrow"), max_inflight=2, body_timeout_s=10)


def upload(url: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}{SCAN}", content=data, headers=PICTRS, timeout=60)


def test_stalled_uploads_and_unfinished_headers_hold_bounded_memory(roomy: Stack) -> None:
    """64 uploads declaring 30 MiB each stop after 15 MiB (960 MiB offered) beside a few
    unfinished header sets: the API holds at most api.max_buffered_bytes of them, refuses
    the rest with 503, and still answers the next normal upload."""
    normal = photo_jpeg(71, 800, 600)
    assert upload(roomy.url, normal).status_code == 200
    pid = roomy.procs[0].pid
    before = memory_kib(pid)
    headers = [unfinished_headers(roomy.url) for _ in range(4)]
    stalled = half_sent_uploads(roomy.url, SCAN, 64, declared=30 * MIB, send=15 * MIB)
    try:
        answered = upload(roomy.url, photo_jpeg(72, 800, 600))
        assert answered.status_code == 200, answered.text

        def held() -> list[HalfSent]:
            return [u for u in stalled if u.poll() is None]

        # Socket buffers hold part of what was sent: once the server has read it all, at
        # most the cap is held and every other upload was answered 503.
        wait_until(lambda: len(held()) * 15 * MIB <= 96 * MIB, 60, "the held uploads to fit")
        refused = [u for u in stalled if u not in held()]
        assert all(u.answer == b"" or u.answer.startswith(b"HTTP/1.1 503") for u in refused)
        after = memory_kib(pid)
        grew = (after["VmHWM"] - before["VmRSS"]) * 1024
        print(  # the figure for the README (pytest -s)
            f"\nRSS before {before['VmRSS'] / 1024:.0f} MiB, peak {after['VmHWM'] / 1024:.0f} "
            f"MiB (+{grew / MIB:.0f} MiB) with 64 stalled 30-MiB uploads (960 MiB offered, "
            f"{len(refused)} answered 503) and 4 unfinished header sets"
        )
        assert grew < 96 * MIB + 64 * MIB, f"peak RSS grew by {grew / MIB:.0f} MiB"
        # The unfinished headers are cut by api.header_timeout_s (3 s) with a 408.
        for sock in headers:
            closed = closed_by_server(sock, timeout=60)
            assert closed is not None and closed.startswith(b"HTTP/1.1 408")
    finally:
        for u in stalled:
            u.close()
        for sock in headers:
            sock.close()


def test_oversized_headers_get_431(roomy: Stack) -> None:
    host, port = roomy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {SCAN} HTTP/1.1\r\nHost: x\r\nX-Junk: ".encode() + b"a" * 20_000)
        answer = closed_by_server(sock, timeout=60)
    assert answer is not None and answer.startswith(b"HTTP/1.1 431")


def test_an_upload_is_in_flight_from_its_first_byte_and_a_stalled_body_times_out(
    narrow: Stack,
) -> None:
    """With api.max_inflight=2, two uploads that stopped sending take both slots: a third
    gets 503 with Retry-After at once. api.body_timeout_s (10 s) then ends the two with 408,
    and uploads go through again."""
    stalled = [
        half_sent_upload(narrow.url, SCAN, declared=1 * MIB, send=64 * 1024) for _ in range(2)
    ]
    try:
        # Poll until the server is reading both (a busy machine may take a moment).
        def third_refused() -> bool:
            response = upload(narrow.url, photo_jpeg(73, 640, 480))
            return response.status_code == 503 and response.headers.get("Retry-After") == "2"

        wait_until(third_refused, 60, "a third upload refused while two are in flight")
        for u in stalled:
            closed = closed_by_server(u.sock, timeout=60)
            assert closed is not None and closed.startswith(b"HTTP/1.1 408")
        wait_until(
            lambda: upload(narrow.url, photo_jpeg(74, 640, 480)).status_code == 200,
            60,
            "uploads answered again once the stalled bodies timed out",
        )
    finally:
        for u in stalled:
            u.close()


def test_every_answer_says_where_its_time_went(roomy: Stack) -> None:
    """``timings_ms`` in the JSON and a ``Server-Timing`` header: a new image is hashed,
    decoded and matched; the same image again is answered from the verdict cache without
    a decode."""
    data = photo_jpeg(75, 800, 600)
    first = upload(roomy.url, data)
    again = upload(roomy.url, data)
    assert first.status_code == again.status_code == 200
    steps = first.json()["timings_ms"]
    assert {"route", "read", "sha256", "lookup", "decode", "pdq", "total"} <= set(steps)
    header = first.headers["Server-Timing"]
    assert "decode;dur=" in header and "reply;dur=" in header and "total;dur=" in header
    assert again.json()["cached"] is True and again.json()["path"] == "fast"
    assert "decode" not in again.json()["timings_ms"]
