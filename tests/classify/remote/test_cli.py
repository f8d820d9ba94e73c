"""What `pictguard` refuses at start-up about remote workers, each in one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PICTGUARD = [sys.executable, "-m", "pictguard.cli"]
TOKEN = "worker-token-0123456789abcdef"


def run(tmp: Path, args: list[str], config: dict[str, Any], **env: str) -> tuple[int, str]:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"state_dir": str(tmp)}, **config}))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    environment.update(PICTGUARD_METRICS__PORT="0", **env)
    out = subprocess.run(
        [*PICTGUARD, "-c", str(path), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, out.stderr + out.stdout


def remote(*workers: dict[str, Any]) -> dict[str, Any]:
    return {"classify": {"remote": {"enabled": True, "workers": list(workers)}}}


def test_a_short_worker_token_is_refused(tmp_path: Path) -> None:
    code, out = run(tmp_path, ["serve"], remote({"id": "home", "token": "too-short"}))
    assert code == 2
    assert "shorter than 16 characters" in out and "openssl rand -hex 32" in out
    assert "too-short" not in out  # not even a refused secret is printed
    assert "Traceback" not in out


def test_a_worker_token_shared_with_another_endpoint_is_refused(tmp_path: Path) -> None:
    config = remote({"id": "home", "token": TOKEN})
    config["enforce"] = {"admin_token": TOKEN}
    code, out = run(tmp_path, ["serve"], config)
    assert code == 2
    assert "classify.remote.workers home: its token is also" in out
    assert TOKEN not in out


@pytest.mark.parametrize(
    "url", ["http://pictguard.example.org", "http://192.168.1.10:8080", "ftp://x.example"]
)
def test_a_worker_refuses_cleartext_to_anything_but_loopback(tmp_path: Path, url: str) -> None:
    code, out = run(
        tmp_path,
        ["run", "classify", "--remote", url],
        {},
        PICTGUARD_CLASSIFY__WORKER__TOKEN=TOKEN,
    )
    assert code == 2
    assert "error:" in out and "https://" in out
    assert "Traceback" not in out


def test_a_worker_needs_its_token(tmp_path: Path) -> None:
    code, out = run(tmp_path, ["run", "classify", "--remote", "https://pictguard.example.org"], {})
    assert code == 2
    assert "PICTGUARD_CLASSIFY__WORKER__TOKEN" in out


def test_remote_is_for_classify_only(tmp_path: Path) -> None:
    code, out = run(tmp_path, ["run", "enforce", "--remote", "https://pictguard.example.org"], {})
    assert code == 2
    assert "--remote is for `pictguard run classify` only" in out
