"""Nobody gets in: tokens, networks, admin separation, body limits, no server-side fetches,
and no secret in the logs, checked against a real `pictguard --debug serve` process.

Existing coverage this file does not repeat: CIDR arithmetic and X-Forwarded-For
(tests/validate_api/test_auth.py), 413 for oversize uploads (tests/validate_api/test_api.py), the
admin token on the admin router (tests/enforce/test_admin_api.py), the refusal of a public
quarantine location (tests/enforce/test_quarantine.py, tests/enforce/test_quarantine_cli.py),
events and verdicts outside ``storage.allowed_locations`` (tests/ingest/test_scope.py,
tests/enforce/test_stage.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.samples import image_bytes
from tests.media import photo_jpeg
from tests.servers import S3Server, free_port, poll_ready, send_chunked_until_answered

# Every secret the configuration carries; none may ever reach a log line.
SECRETS = {
    "client token a": "tokA-9f3c1e7b5d81",
    "client token b": "tokB-2a8d4c6e0f93",
    "admin token": "adm-7c1e9b3f5a2d64",
    "S3 secret key": "s3sk-4e6a8c0b2d17",
    "S3 session token": "s3st-1b3d5f7a9c28",
    "Kafka SASL password": "sasl-8d0f2b4e6a39",
    "webhook HMAC secret": "hmac-5c7e9a1b3d40",
    "webhook header": "hdr-0d2f4b6a8c51",
    "Slack webhook path": "slk-3f5b7d9e1c62",
    "MinIO webhook token": "mnt-6a8c0e2b4d73",
}
S = SECRETS


class Recorder:
    """A loopback HTTP server that answers 200 and records every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _hit(self) -> None:
                recorder.hits.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_PUT = _hit

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Guarded:
    url: str
    hook_url: str
    bucket: str
    canary: Recorder  # must never be called
    sink: Recorder  # receives the notifications
    proc: subprocess.Popen[bytes]
    log: Path
    root: Path  # holds watched/ (a watch root) and victim/ (outside every root)
    statuses: dict[str, int] = field(default_factory=dict)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def guarded(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """`pictguard --debug serve` with every kind of secret configured."""
    tmp = tmp_path_factory.mktemp("guarded")
    client: Any = s3_server.client()
    bucket = f"sec-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="media/cat.png", Body=image_bytes(77, "PNG", 64))
    canary, sink = Recorder(), Recorder()
    port, hook_port = free_port(), free_port()
    (tmp / "watched" / "2024").mkdir(parents=True)
    (tmp / "victim").mkdir()
    config = {
        "kafka": {"sasl_password": S["Kafka SASL password"]},
        "s3": {
            "endpoint_url": s3_server.endpoint,
            "access_key_id": "testing",
            "secret_access_key": S["S3 secret key"],
            "session_token": S["S3 session token"],
        },
        "storage": {
            "state_dir": str(tmp / "state"),
            "allowed_locations": [f"s3://{bucket}"],
        },
        "classify": {"classifiers": ["hashlist"]},
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "deadline_s": 3,
            "clients": [
                {"id": "pictrs", "cidrs": ["127.0.0.0/8", "::1/128"]},
                {"id": "script-a", "token": S["client token a"]},
                {"id": "script-b", "token": S["client token b"]},
            ],
        },
        "ingest": {
            "webhook": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": hook_port,
                "minio_token": S["MinIO webhook token"],
            },
            "watch": {"roots": [str(tmp / "watched")]},
        },
        "enforce": {
            "admin_token": S["admin token"],
            "quarantine": "quarantine/",
            "notify": {
                "channels": [
                    {
                        "type": "webhook",
                        "url": f"{sink.url}/hook",
                        "secret": S["webhook HMAC secret"],
                        "headers": {"Authorization": f"Bearer {S['webhook header']}"},
                        "min_severity": "info",
                        "digest_interval_s": 0,
                        "max_attempts": 1,
                    },
                    {
                        "type": "slack",
                        "url": f"{sink.url}/services/T0/B0/{S['Slack webhook path']}",
                        "min_severity": "info",
                        "digest_interval_s": 0,
                        "max_attempts": 1,
                    },
                ]
            },
        },
        "log": {"level": "DEBUG"},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pictguard.cli", "--debug", "-c", str(path), "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack = Guarded(
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{hook_port}",
        bucket,
        canary,
        sink,
        proc,
        log,
        tmp,
    )
    if not poll_ready(stack.url, lambda: proc.poll() is None):
        text = stack.stop()
        canary.close()
        sink.close()
        raise RuntimeError(f"serve never became ready:\n{text[-3000:]}")
    yield stack
    stack.stop()
    canary.close()
    sink.close()


TOKEN_A, TOKEN_B, ADMIN = S["client token a"], S["client token b"], S["admin token"]
SCAN_A, CHECK = "/api/v1/scan/script-a", "/api/v1/check"


@pytest.mark.parametrize(
    ("what", "path", "params", "headers", "status"),
    [
        ("no token", SCAN_A, {}, {}, 401),
        ("wrong token", SCAN_A, {"token": "tokA-wrong"}, {}, 401),
        ("token one char short", SCAN_A, {"token": TOKEN_A[:-1]}, {}, 401),
        ("token with a char more", SCAN_A, {"token": TOKEN_A + "0"}, {}, 401),
        ("another client's token", SCAN_A, {"token": TOKEN_B}, {}, 401),
        ("another client's bearer", CHECK, {"client_id": "script-b"}, bearer(TOKEN_A), 401),
        ("the admin token as a client's", CHECK, {"client_id": "script-a"}, bearer(ADMIN), 401),
        ("unknown client", "/api/v1/scan/script-c", {"token": TOKEN_A}, {}, 401),
        ("own token in the query", SCAN_A, {"token": TOKEN_A}, {}, 200),
        ("own token as bearer", CHECK, {"client_id": "script-b"}, bearer(TOKEN_B), 200),
    ],
)
def test_scan_endpoints_accept_only_the_clients_own_token(
    guarded: Guarded,
    what: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    response = httpx.post(
        f"{guarded.url}{path}",
        params=params,
        headers={"Content-Type": "image/png", **headers},
        content=image_bytes(5, "PNG", 32),
        timeout=30,
    )
    guarded.statuses[what] = response.status_code
    assert response.status_code == status, what
    if status == 401:
        assert response.json() == {"message": "unknown or unauthorised client"}  # no hints


@pytest.mark.parametrize(
    ("what", "headers", "status"),
    [
        ("no token", {}, 401),
        ("a scan client's token", bearer(S["client token a"]), 401),
        ("the admin token in Basic form", {"Authorization": f"Basic {S['admin token']}"}, 401),
        ("the admin token", bearer(S["admin token"]), 200),
    ],
)
def test_admin_endpoints_take_only_the_admin_token(
    guarded: Guarded, what: str, headers: dict[str, str], status: int
) -> None:
    response = httpx.get(f"{guarded.url}/admin/enforce/status", headers=headers, timeout=30)
    assert response.status_code == status, what
    # A client token must not open the admin API by the query string either.
    by_query = httpx.get(
        f"{guarded.url}/admin/audit", params={"token": S["admin token"]}, timeout=30
    )
    assert by_query.status_code == 401


def test_unauthenticated_admin_body_is_refused_before_it_is_read(guarded: Guarded) -> None:
    """FastAPI reads a JSON body before the token check; the API caps it at 1 MiB."""
    answer, sent = send_chunked_until_answered(
        guarded.url, "/admin/block", "application/json", b"a" * 65536, 256 * 1024 * 1024
    )
    assert answer.startswith("HTTP/1.1 413")
    assert sent < 8 * 1024 * 1024  # refused after about 1 MiB, not after 256
    host, port = guarded.url.removeprefix("http://").split(":")
    # A declared length above the cap is refused before a byte of the body is read.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /admin/allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        assert sock.recv(4096).decode(errors="replace").startswith("HTTP/1.1 413")


def test_no_server_side_fetch_of_user_given_urls(guarded: Guarded) -> None:
    """URLs in uploads, parameters and admin targets are never fetched (no SSRF)."""
    url = f"{guarded.canary.url}/fetched"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        f'<image href="{url}/svg" xlink:href="{url}/xlink"/></svg>'
    ).encode()
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "{url}/xxe">]>'
        f'<svg xmlns="http://www.w3.org/2000/svg">&e;</svg>'
    ).encode()
    xmp = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{url}/rdf#">'
        f'<rdf:Description rdf:about="{url}/about"/></rdf:RDF></x:xmpmeta>'
    ).encode()
    jpeg_with_xmp = _with_app1(image_bytes(6, "JPEG", 64), b"http://ns.adobe.com/xap/1.0/\0" + xmp)
    uploads = [
        (svg, "image/svg+xml"),
        (xxe, "image/svg+xml"),
        (jpeg_with_xmp, "image/jpeg"),
        (url.encode(), "text/uri-list"),
        (json.dumps({"url": url}).encode(), "application/json"),
        (f"<html><img src='{url}/html'></html>".encode(), "text/html"),
    ]
    with httpx.Client(timeout=30) as http:
        for body, kind in uploads:
            answer = http.post(
                f"{guarded.url}/api/v1/scan/pictrs",
                params={"url": url, "proxy": url},
                content=body,
                headers={"Content-Type": kind, "Referer": url, "X-Forwarded-Host": url},
            )
            assert answer.status_code in (200, 406, 415, 422), answer.text
        # pict-rs's own endpoints take ?url=; pictguard has none of them.
        assert http.get(f"{guarded.url}/image/download", params={"url": url}).status_code == 404
        admin = bearer(S["admin token"])
        for endpoint in ("/admin/allow", "/admin/block", "/admin/restore"):
            answer = http.post(
                f"{guarded.url}{endpoint}",
                json={"target": url, "reason": "ssrf probe"},
                headers=admin,
            )
            assert answer.status_code in (400, 404), (endpoint, answer.status_code, answer.text)
    time.sleep(1.0)  # anything fetched asynchronously would have arrived by now
    assert guarded.canary.hits == []


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_admin_api_cannot_reach_files_of_its_host(guarded: Guarded, tmp_path: Path) -> None:
    """A file path target must be media pictguard knows; the host's files stay put."""
    victim = tmp_path / "not-media.conf"
    victim.write_text("an important file of the API's host")
    admin = bearer(S["admin token"])
    for endpoint in ("/admin/block", "/admin/allow", "/admin/restore"):
        for target in (str(victim), f"file://{victim}", "/etc/hostname"):
            answer = httpx.post(
                f"{guarded.url}{endpoint}",
                json={"target": target, "reason": "probe"},
                headers=admin,
                timeout=30,
            )
            assert answer.status_code in (400, 404), (endpoint, target, answer.text)
    assert victim.read_text() == "an important file of the API's host"
    assert [p.name for p in tmp_path.iterdir()] == ["not-media.conf"]  # nothing quarantined


def test_admin_api_resolves_paths_before_any_check(guarded: Guarded) -> None:
    """Before, ``file://ROOT/watched/../victim/x.jpg`` passed the watched-root check as text:
    block moved the file into quarantine, and with ``dry_run`` the answer gave its sha256."""
    root = guarded.root
    victim = root / "victim" / "passport-scan.jpg"
    data = photo_jpeg(91, 1200, 900)
    victim.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    watched = root / "watched"
    (watched / "2024" / "avatar.jpg").unlink(missing_ok=True)
    os.symlink(victim, watched / "2024" / "avatar.jpg")  # a link out of the root
    (watched / "old").unlink(missing_ok=True)
    os.symlink(root / "victim", watched / "old")  # a folder link out of the root
    targets = [
        f"file://{watched}/../victim/passport-scan.jpg",
        f"{watched}/2024/../../victim/passport-scan.jpg",
        f"file://{watched}/2024/avatar.jpg",
        f"{watched}/old/passport-scan.jpg",
        f"s3://another-{guarded.bucket}/passport-scan.jpg",  # a bucket it may not touch
    ]
    admin = bearer(S["admin token"])
    with httpx.Client(timeout=30) as http:
        for endpoint in ("/admin/block", "/admin/allow", "/admin/restore"):
            for target in targets:
                for dry_run in (True, False):
                    answer = http.post(
                        f"{guarded.url}{endpoint}",
                        json={"target": target, "reason": "probe", "dry_run": dry_run},
                        headers=admin,
                    )
                    assert answer.status_code in (400, 404), (endpoint, target, answer.text)
                    assert digest not in answer.text
    assert victim.read_bytes() == data
    assert sorted(p.name for p in (root / "victim").iterdir()) == ["passport-scan.jpg"]
    quarantined = root / "state" / "quarantine"
    assert not quarantined.exists() or not any(p.is_file() for p in quarantined.rglob("*"))


def test_notifications_about_another_bucket_are_not_scanned(guarded: Guarded) -> None:
    """Before, a webhook event naming any bucket was accepted and scanned."""
    hook = bearer(S["MinIO webhook token"])
    with httpx.Client(timeout=30) as http:
        answer = http.post(
            f"{guarded.hook_url}/hooks/minio",
            json=_minio_event(f"another-{guarded.bucket}", "media/cat.png"),
            headers=hook,
        )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["refused"]) == (0, 1)
    assert "location_not_allowed" in answer.json()["dead_lettered"]


def _minio_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key.replace("/", "%2F"), "size": 10, "eTag": "x"},
                },
            }
        ],
    }


def test_token_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every token check goes through hmac.compare_digest (no early-exit string ==)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import ingest.webhook
    from enforce.admin_api import admin_router
    from pipeline.tokens import secret_matches
    from validate_api.auth import authorise
    from validate_api.settings import ApiSettings

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((bytes(a, "utf-8") if isinstance(a, str) else a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    settings = ApiSettings.model_validate(
        {"clients": [{"id": "c", "token": "sekrit-token-0123456789"}]}
    )
    with pytest.raises(Exception, match="token"):
        authorise(settings, "c", token="guess", peer="10.0.0.1", forwarded_for=None)
    assert any(b"sekrit-token-0123456789" in pair for pair in compared)

    compared.clear()
    app = FastAPI()
    app.include_router(admin_router(lambda: None, token="admin-sekrit-0123456789"))  # type: ignore[arg-type]
    response = TestClient(app).get("/admin/audit", headers=bearer("guess"))
    assert response.status_code == 401
    assert any(b"admin-sekrit-0123456789" in pair for pair in compared)

    compared.clear()
    from pydantic import SecretStr

    assert ingest.webhook.secret_matches is secret_matches  # the receiver's only check
    assert not secret_matches("guess", SecretStr("hook-sekrit-0123456789"))
    assert any(b"hook-sekrit-0123456789" in pair for pair in compared)


def test_secrets_never_reach_the_logs(guarded: Guarded) -> None:
    """Runs last in this module: exercise every path that logs, then scan the whole log."""
    admin = bearer(S["admin token"])
    with httpx.Client(timeout=30) as http:
        # Wrong tokens, uploads, a flagged upload (notified to the sink).
        http.post(f"{guarded.url}/api/v1/scan/script-a", params={"token": "nope"}, content=b"x")
        bad = image_bytes(78, "PNG", 64)
        blocked = http.post(
            f"{guarded.url}/admin/block",
            json={"target": hashlib.sha256(bad).hexdigest(), "reason": "test"},
            headers=admin,
        )
        assert blocked.status_code in (200, 400), blocked.text
        for _ in range(50):
            answer = http.post(f"{guarded.url}/api/v1/scan/pictrs", content=bad)
            if answer.status_code == 406:
                break
            time.sleep(0.1)
        # S3 calls signed with the secret key and the session token.
        allowed = http.post(
            f"{guarded.url}/admin/allow",
            json={"target": f"s3://{guarded.bucket}/media/cat.png", "reason": "test"},
            headers=admin,
        )
        assert allowed.status_code == 200, allowed.text
        # The bucket-notification receiver, with a wrong and the right token.
        event = _minio_event(guarded.bucket, "media/cat.png")
        for token in ("wrong", S["MinIO webhook token"]):
            http.post(f"{guarded.hook_url}/hooks/minio", json=event, headers=bearer(token))
    time.sleep(3)  # notifications and the scan of the notified object run meanwhile
    text = guarded.stop()
    assert len(text.splitlines()) > 50  # the debug log really was written
    assert guarded.sink.hits  # notifications went out (and httpx logged their requests)
    assert "botocore" in text and "X-Amz-Security-Token" in text  # S3 debug output too
    leaked = {name for name, secret in SECRETS.items() if secret in text}
    assert leaked == set(), f"secrets in the log: {sorted(leaked)}"


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_log_redaction_covers_every_spelling_of_a_secret(fmt: str) -> None:
    """Unit check of the formatter the CLI installs: plain, URL-quoted, JSON-escaped."""
    import logging

    from pictguard.settings import load_settings
    from pipeline.logs import ConsoleFormatter, JsonFormatter, RedactingFormatter
    from pipeline.settings import secret_values

    secret = 'p@ss/w"rd+1-0123456789'
    settings = load_settings(
        api={"clients": [{"id": "c", "token": secret}]},
        enforce={"notify": {"channels": [{"type": "slack", "url": "https://hooks/T/B/xyz123"}]}},
    )
    found = secret_values(settings)
    assert {secret, "https://hooks/T/B/xyz123"} <= found
    inner = JsonFormatter() if fmt == "json" else ConsoleFormatter()
    formatter = RedactingFormatter(inner, found)
    record = logging.makeLogRecord(
        {
            "msg": "got %s and %s",
            "args": (secret, "token=p%40ss%2Fw%22rd%2B1-0123456789"),
            "levelno": 20,
        }
    )
    record.__dict__["url"] = "https://hooks/T/B/xyz123"
    line = formatter.format(record)
    assert "ss/w" not in line and "p%40ss" not in line and "xyz123" not in line
    assert line.count(RedactingFormatter.REDACTED) == 3
