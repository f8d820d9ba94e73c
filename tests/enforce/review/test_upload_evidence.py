"""A pict-rs upload that pictguard rejects is kept as evidence, in both modes.

pict-rs stores nothing it was told to reject: the API hands the upload to enforce on the
``upload-evidence`` topic and enforce writes it into the quarantine location with the
verdict, as it quarantines a bucket object. Real processes, as an admin runs them:
``pictguard serve`` on one box, and ``run api`` / ``run classify`` / ``run enforce`` on Kafka.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.media import photo_jpeg
from tests.servers import Broker, free_port, wait_until
from tests.validate_api.helpers import (
    CLIENT,
    Stack,
    base_config,
    kafka_config,
    start,
    wait_ready,
    warm_up,
)

pytestmark = pytest.mark.timeout(600)


def with_quarantine(config: dict[str, Any], quarantine: Path) -> dict[str, Any]:
    config["classify"]["classifiers"] = ["hashlist"]
    config["enforce"] = {"quarantine": str(quarantine)}
    return config


@pytest.fixture(params=["single", "distributed"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, Path, Path]]:
    """(the running stack, enforce's quarantine folder, enforce's state file)."""
    quarantine = tmp_path / "quarantine"
    if request.param == "single":
        port = free_port()
        config = with_quarantine(base_config(tmp_path, port=port), quarantine)
        stack = Stack([f"http://127.0.0.1:{port}"], config)
        start(stack, ["serve"], config, tmp_path, "serve")
        state_file = tmp_path / "state" / "pictguard.sqlite3"
    else:
        broker: Broker = request.getfixturevalue("broker")
        prefix = f"e{os.getpid()}{int(time.time() * 1000) % 100000}."
        port = free_port()
        stack = Stack([f"http://127.0.0.1:{port}"], {})
        for role in ("classify", "enforce"):
            config = with_quarantine(kafka_config(tmp_path / role, broker, prefix), quarantine)
            start(stack, ["run", role], config, tmp_path, role)
        api = kafka_config(tmp_path / "api", broker, prefix, port=port, replica_id="replica-e")
        start(stack, ["run", "api"], with_quarantine(api, quarantine), tmp_path, "api")
        stack.config = with_quarantine(kafka_config(tmp_path, broker, prefix), quarantine)
        state_file = tmp_path / "enforce" / "state" / "pictguard.sqlite3"
    try:
        wait_ready(stack)
        warm_up(stack)
        yield stack, quarantine, state_file
    finally:
        stack.stop()


def block(stack: Stack, data: bytes, tmp: Path) -> None:
    """`pictguard hashes add --block FILE`, as an admin adds a known image."""
    image = tmp / "known.jpg"
    image.write_bytes(data)
    config = tmp / "admin.yaml"
    config.write_text(yaml.safe_dump(stack.config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(config), "hashes", "add", "--block",
         "--reason", "known", str(image)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def kept(state_file: Path) -> list[tuple[str, str]]:
    if not state_file.exists():
        return []
    conn = sqlite3.connect(state_file)
    try:
        return conn.execute(
            "SELECT outcome, body FROM actions WHERE action = 'quarantine' AND object_id IS NULL"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_a_rejected_upload_is_kept_with_its_verdict(
    stack: tuple[Stack, Path, Path], tmp_path: Path
) -> None:
    running, quarantine, state_file = stack
    photo = photo_jpeg(4242, 1024, 768, detail=1.0)
    block(running, photo, tmp_path)

    def post() -> httpx.Response:
        return httpx.post(
            f"{running.url}/api/v1/scan/{CLIENT}",
            content=photo,
            headers={"Content-Type": "image/jpeg", "User-Agent": "pict-rs v0.5.16"},
            timeout=30,
        )

    answers: list[httpx.Response] = []
    wait_until(
        lambda: answers.append(post()) or answers[-1].status_code == 406,
        timeout=60,
        what="the API to reject the blocklisted upload",
        every=0.3,
    )
    verdict = answers[-1].json()
    assert verdict["decision"] == "flag_csam"

    wait_until(lambda: kept(state_file), timeout=60, what="enforce to keep the upload")
    [(outcome, body)] = kept(state_file)
    action = json.loads(body)
    assert outcome == "done" and "pict-rs client" in action["detail"]
    # The same verdict as the one the 406 named (and enforce recorded and reported).
    assert action["verdict_id"] == verdict["verdict_id"]
    copy = Path(action["quarantine"]["bucket"]) / action["quarantine"]["key"]
    assert copy.is_relative_to(quarantine / "uploads")
    assert copy.read_bytes() == photo  # the upload, byte for byte
    metadata = json.loads(copy.with_name(copy.name + ".pictguard-meta.json").read_text())
    assert metadata["pictguard-sha256"] == hashlib.sha256(photo).hexdigest()
    assert metadata["pictguard-upload-client"] == CLIENT
    assert metadata["pictguard-decision"] == "flag_csam"

    # A clean upload is kept nowhere: after it, a second rejected upload is kept, and
    # every kept file is the rejected photo.
    clean = httpx.post(
        f"{running.url}/api/v1/scan/{CLIENT}",
        content=photo_jpeg(4243, 640, 480),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert clean.status_code == 200
    assert post().status_code == 406
    wait_until(lambda: len(kept(state_file)) == 2, timeout=60, what="the second upload kept")
    files = list((quarantine / "uploads").rglob("*.jpg"))
    assert len(files) == 2 and all(f.read_bytes() == photo for f in files)
