"""The validate API as pict-rs uses it, in single-process mode and over Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.samples import image_bytes
from tests.enforce.receivers import HttpReceiver
from tests.media import photo_jpeg
from tests.servers import send_chunked_until_answered, wait_until
from tests.validate_api.helpers import CLIENT, Stack

PICTRS_HEADERS = {"Content-Type": "image/png", "User-Agent": "pict-rs v0.5.16"}


async def chunked(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """The body as pict-rs sends it: streamed, chunked, no Content-Length."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def pictrs_post(url: str, data: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:  # pict-rs's default timeout
        return await client.post(
            f"{url}/api/v1/scan/{CLIENT}", content=chunked(data), headers=PICTRS_HEADERS
        )


def admin(config: dict[str, Any], tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `pictguard` admin command with ``config``, as an admin would run it."""
    path = tmp / f"admin-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_to_blocklist(stack: Stack, data: bytes, tmp: Path, reason: str = "test") -> None:
    """`pictguard hashes add --block` against the stack's own state, as an admin would."""
    image = tmp / "known-bad.png"
    image.write_bytes(data)
    done = admin(stack.config, tmp, "hashes", "add", "--block", "--reason", reason, str(image))
    assert done.returncode == 0, done.stderr


def counted(url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` with ``labels`` on ``url``'s /metrics (0 if none)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def until_blocked(
    url: str, data: bytes, budget_s: float = 60, *, path: str | None = None
) -> httpx.Response:
    """The running API picks the new entry up within seconds (it follows the table); the
    budget is generous so a busy machine only makes the wait longer, never the test fail.

    ``path``: wait for a refusal on that path (over Kafka classify may learn the entry
    before the API does, and refuse the upload on the model path first)."""
    deadline = time.monotonic() + budget_s
    while True:
        response = await pictrs_post(url, data)
        refused = response.status_code == 406
        if refused and (path is None or response.json()["path"] == path):
            return response
        if time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


@pytest.fixture(params=["single", "kafka_stack"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield request.getfixturevalue(request.param)


async def test_pictrs_client_gets_2xx_for_clean_and_4xx_for_blocklisted(
    stack: Stack, tmp_path: Path
) -> None:
    clean = image_bytes(101, "PNG", 128)
    first = await pictrs_post(stack.url, clean)
    assert first.status_code == 200, first.text
    assert first.json()["path"] == "model"  # classified on the sync lane
    # Over Kafka the verdict cache reaches the API replica through its topic within a moment.
    deadline = time.monotonic() + 60
    while True:
        again = await pictrs_post(stack.url, clean)
        if again.json()["path"] == "fast" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert again.status_code == 200 and again.json()["path"] == "fast"  # verdict cache

    bad = image_bytes(202, "PNG", 128)
    add_to_blocklist(stack, bad, tmp_path)
    rejected = await until_blocked(stack.url, bad)
    assert rejected.status_code == 406
    body = rejected.json()
    assert body["decision"] == "flag_csam" and "message" in body
    assert "sha256" not in body  # pict-rs learns the decision, not what matched


async def test_a_fast_path_rejection_is_recorded_audited_notified_and_counted(
    stack: Stack, notifications: HttpReceiver, tmp_path: Path
) -> None:
    """A blocklisted upload answered from the hash list is a decision like a model's: enforce
    records and notifies it, the audit shows it, and the metrics count it as such."""
    bad = photo_jpeg(4411, 640, 480)
    sha256 = hashlib.sha256(bad).hexdigest()
    add_to_blocklist(stack, bad, tmp_path)
    rejected = await until_blocked(stack.url, bad, path="fast")
    assert rejected.status_code == 406
    assert (rejected.json()["decision"], rejected.json()["path"]) == ("flag_csam", "fast")

    def audited() -> list[dict[str, Any]]:
        done = admin(stack.enforce_config, tmp_path, "audit", "--decision", "flag_csam", "--json")
        assert done.returncode == 0, done.stderr
        # The report of the decision; the upload kept as evidence is a `quarantine` action
        # of its own (tests/enforce/review/test_upload_evidence.py).
        return [
            a
            for a in json.loads(done.stdout)
            if a.get("sha256") == sha256
            and a["action"] == "report"
            and a["verdict_id"] == rejected.json()["verdict_id"]
        ]

    wait_until(audited, 60, "the audit entry of the rejected upload")
    [action] = audited()
    assert (action["action"], action["outcome"]) == ("report", "done")
    assert "object" not in action  # an inline upload: pict-rs does not keep it
    assert action["verdict_id"] == rejected.json()["verdict_id"]
    wait_until(
        lambda: any(
            r.json().get("verdict_id") == action["verdict_id"] for r in list(notifications.requests)
        ),
        60,
        "the notification",
    )
    wait_until(
        lambda: (
            counted(
                stack.url,
                "pictguard_verdicts_total",
                decision="flag_csam",
                lane="sync",
                path="hashlist",
            )
            >= 1
        ),
        30,
        "pictguard_verdicts_total{decision=flag_csam,lane=sync,path=hashlist}",
    )


async def test_a_rejection_keeps_the_list_entry_and_the_hashes_inside(
    stack: Stack, tmp_path: Path
) -> None:
    """pict-rs logs the 406 body (and may pass it on): it says what was decided and the
    verdict id to look up, never the admins' note on the entry or the image's hashes."""
    bad = photo_jpeg(4412, 640, 480)
    add_to_blocklist(stack, bad, tmp_path, reason="moderator note: report #4412 from alice")
    rejected = await until_blocked(stack.url, bad)

    assert rejected.status_code == 406
    body = rejected.json()
    assert body["decision"] == "flag_csam"
    assert not {"sha256", "pdq", "matched", "detail", "scores"} & set(body)
    assert "4412" not in rejected.text
    assert hashlib.sha256(bad).hexdigest() not in rejected.text
    assert body["verdict_id"]  # what `pictguard audit` finds it by


async def test_check_endpoint_returns_the_full_verdict(stack: Stack) -> None:
    data = image_bytes(303, "JPEG", 96)
    async with httpx.AsyncClient(timeout=30) as client:
        denied = await client.post(
            f"{stack.url}/api/v1/check", params={"client_id": "script"}, content=data
        )
        assert denied.status_code == 401  # the script client needs its token
        response = await client.post(
            f"{stack.url}/api/v1/check",
            params={"client_id": "script"},
            content=data,
            headers={
                "Authorization": "Bearer s3cret-token-0123456789",
                "Content-Type": "image/jpeg",
            },
        )
    assert response.status_code == 200
    verdict = response.json()
    assert verdict["decision"] == "allow", verdict
    assert verdict["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(verdict["pdq"]) == 64 and "scores" in verdict


async def test_unknown_client_and_wrong_cidr_get_401(single: Stack) -> None:
    data = image_bytes(1, "PNG", 32)
    async with httpx.AsyncClient(timeout=10) as client:
        unknown = await client.post(f"{single.url}/api/v1/scan/nobody", content=data)
        wrong_net = await client.post(f"{single.url}/api/v1/scan/elsewhere", content=data)
        spoofed = await client.post(
            f"{single.url}/api/v1/scan/elsewhere",
            content=data,
            headers={"X-Forwarded-For": "10.1.2.3"},  # not from a trusted proxy: ignored
        )
    assert [unknown.status_code, wrong_net.status_code, spoofed.status_code] == [401, 401, 401]


def test_oversize_body_gets_413_without_being_read(single: Stack) -> None:
    host, port = single.url.removeprefix("http://").split(":")
    limit = 40 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v1/scan/{CLIENT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n".encode()
            + b"\x89PNG"
            + b"\0" * 1000
        )
        answer = sock.recv(4096).decode(errors="replace")
    # Answered after 1 KB of a 40 MB body: the rest was never read.
    assert answer.startswith("HTTP/1.1 413")


def test_chunked_oversize_body_is_cut_off(single: Stack) -> None:
    status, sent = send_chunked_until_answered(
        single.url, f"/api/v1/scan/{CLIENT}", "image/png", b"\0" * 65536, 200 * 1024 * 1024
    )
    assert status.startswith("HTTP/1.1 413")
    assert sent < 100 * 1024 * 1024  # refused long before the sender was done


async def test_two_replicas_under_load_never_cross_verdicts(kafka_stack: Stack) -> None:
    images = [image_bytes(10_000 + i, "PNG", 64) for i in range(48)]

    async def one(i: int, data: bytes) -> tuple[int, dict[str, Any]]:
        url = kafka_stack.urls[i % 2]
        response = await pictrs_post(url, data)
        return response.status_code, response.json()

    results = await asyncio.gather(*(one(i, d) for i, d in enumerate(images)))
    for data, (status, body) in zip(images, results, strict=True):
        assert status == 200, body
        assert body["path"] == "model"  # a real round trip, not a timeout or a cache hit
        assert body["sha256"] == hashlib.sha256(data).hexdigest()  # its own verdict
    assert len({body["request_id"] for _, body in results}) == len(images)


async def test_timeout_policy_answers_by_the_deadline_when_classify_is_down(
    broker: Any, tmp_path: Path
) -> None:
    from tests.servers import free_port
    from tests.validate_api.helpers import kafka_config, start, wait_ready

    port = free_port()
    stack = Stack([f"http://127.0.0.1:{port}"], {})
    for policy, deadline in (("accept", 1.0),):
        cfg = kafka_config(
            tmp_path, broker, f"down{port}.", port=port, deadline_s=deadline, on_timeout=policy
        )
        start(stack, ["run", "api"], cfg, tmp_path, "api-alone")  # no classify anywhere
    try:
        wait_ready(stack)
        started = time.monotonic()
        response = await pictrs_post(stack.url, image_bytes(7, "PNG", 64))
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        body = response.json()
        assert "unverified" in body
        # The promise, measured where the server keeps it: answered by the deadline plus
        # half a second. The client's own figure adds HTTP and a busy machine's scheduling,
        # so it only has to stay far below pict-rs's 30 s.
        assert body["elapsed_ms"] < (1.0 + 0.5) * 1000
        assert elapsed < 10
    finally:
        stack.stop()


async def test_reject_policy_when_the_broker_is_gone(tmp_path: Path) -> None:
    from tests.servers import free_port, start_broker
    from tests.validate_api.helpers import kafka_config, start, wait_ready

    own = start_broker()
    port = free_port()
    stack = Stack([f"http://127.0.0.1:{port}"], {})
    cfg = kafka_config(tmp_path, own, "gone.", port=port, deadline_s=1.0, on_timeout="reject")
    start(stack, ["run", "api"], cfg, tmp_path, "api-gone")
    try:
        wait_ready(stack)
        own.stop()  # the broker dies under a running API
        started = time.monotonic()
        response = await pictrs_post(stack.url, image_bytes(8, "PNG", 64))
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert "unverified" in response.json()
        assert elapsed < 1.0 + 0.5
        assert stack.procs[0].poll() is None  # the API keeps running
    finally:
        stack.stop()


async def test_a_multi_megabyte_upload_crosses_kafka(kafka_stack: Stack) -> None:
    data = image_bytes(4242, "PNG", 1200)  # noise: ~4 MB, far above Kafka's 1 MB default
    assert len(data) > 3 * 1024 * 1024
    response = await pictrs_post(kafka_stack.url, data)
    assert response.status_code == 200
    assert response.json()["path"] == "model"
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    from tests.validate_api.helpers import base_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(base_config(tmp_path, port=port)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
        done = subprocess.run(
            [sys.executable, "-m", "pictguard.cli", "-c", str(config), "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert f"validate API cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "PICTGUARD_API__HOST/PORT" in done.stderr and "Traceback" not in done.stderr
