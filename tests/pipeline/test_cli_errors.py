"""Wrong inputs at the command line: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.samples import image_bytes
from tests.servers import S3Server, free_port


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    full_env.update(PICTGUARD_STORAGE__STATE_DIR=str(tmp_path / "state"), **env)
    # Only a safety net: tests do not time things (a busy machine must not fail them); how
    # fast the errors come is the start-up time that the CLI's lazy imports keep short.
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0]


def s3_env(s3: S3Server, key: str = "testing", secret: str = "testing") -> dict[str, str]:
    return {
        "PICTGUARD_S3__ENDPOINT_URL": s3.endpoint,
        "PICTGUARD_S3__ACCESS_KEY_ID": key,
        "PICTGUARD_S3__SECRET_ACCESS_KEY": secret,
    }


def test_missing_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    result = run_cli(["scan", "s3://no-such-bucket"], tmp_path, **s3_env(s3_server))
    assert_one_clear_line(result, "no-such-bucket", "not found", "PICTGUARD_S3__ENDPOINT_URL")


def test_missing_folder(tmp_path: Path) -> None:
    result = run_cli(["scan", str(tmp_path / "nowhere")], tmp_path)
    assert_one_clear_line(result, "nowhere", "does not exist")


def test_wrong_credentials(tmp_path: Path) -> None:
    # moto accepts any key, so wrong credentials are checked against a real signature
    # verifier: a loopback endpoint that answers every request with S3's AccessDenied.
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Denier(BaseHTTPRequestHandler):
        def _deny(self) -> None:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
                b"<Message>The AWS Access Key Id you provided does not exist.</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = _deny

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Denier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "PICTGUARD_S3__ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
            "PICTGUARD_S3__ACCESS_KEY_ID": "wrong",
            "PICTGUARD_S3__SECRET_ACCESS_KEY": "wrong",
        }
        result = run_cli(["scan", "s3://pics"], tmp_path, **env)
    finally:
        server.shutdown()
    assert_one_clear_line(result, "access denied", "PICTGUARD_S3__ACCESS_KEY_ID")


def test_unreachable_s3(tmp_path: Path) -> None:
    env = {
        "PICTGUARD_S3__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "PICTGUARD_S3__ACCESS_KEY_ID": "k",
        "PICTGUARD_S3__SECRET_ACCESS_KEY": "s",
    }
    result = run_cli(["scan", "s3://pics"], tmp_path, **env)
    assert_one_clear_line(result, "cannot reach S3", "PICTGUARD_S3__ENDPOINT_URL")


@pytest.mark.parametrize("args", [["run", "classify"], ["run", "enforce"], ["topics", "create"]])
def test_unreachable_broker(tmp_path: Path, args: list[str]) -> None:
    env = {"PICTGUARD_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = run_cli(args, tmp_path, **env)
    assert_one_clear_line(result, "cannot reach Kafka", "PICTGUARD_KAFKA__BOOTSTRAP_SERVERS")


def test_invalid_setting_names_the_setting_and_allowed_values(tmp_path: Path) -> None:
    result = run_cli(["scan", str(tmp_path)], tmp_path, PICTGUARD_ENFORCE__ON_FLAG_CSAM="nuke")
    assert_one_clear_line(
        result, "PICTGUARD_ENFORCE__ON_FLAG_CSAM", "'report', 'delete' or 'quarantine'"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli(["--debug", "scan", str(tmp_path / "nowhere")], tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_scan_runs_on_either_event_loop(loop: str, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(1, "PNG", 32))
    result = run_cli(
        ["--event-loop", loop, "scan", str(folder)],
        tmp_path,
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist"]',
    )
    assert result.returncode == 0, result.stderr
    table = {
        cells[1].strip(): cells[2].strip()
        for line in result.stdout.splitlines()
        if len(cells := line.split("│")) == 4
    }
    assert table["scanned"] == "1" and table["clean"] == "1" and table["errors"] == "0"


def test_unknown_event_loop_is_refused(tmp_path: Path) -> None:
    result = run_cli(["--event-loop", "trio", "scan", str(tmp_path)], tmp_path)
    assert result.returncode == 2
    assert "trio" in result.stderr
