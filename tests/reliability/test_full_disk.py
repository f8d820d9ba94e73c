"""The SQLite state on a full disk: one clear line naming the file and what to do, exit 2.

The state folder is a tiny tmpfs mounted in a private mount namespace (``unshare -rm``,
no root needed where unprivileged user namespaces are allowed), so SQLite meets a real
ENOSPC, once at start-up and once in the middle of a scan.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.samples import image_bytes
from tests.reliability.audit import record


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt || exit 1"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_work(), reason="needs unshare -rm (user and mount namespaces)"
)


def scan_on_full_disk(tmp_path: Path, size: str) -> subprocess.CompletedProcess[str]:
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    for i in range(400):
        (media / f"{i:04d}.png").write_bytes(image_bytes(i, "PNG", 16))
    state = tmp_path / f"state-{size}"
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(PICTGUARD_STORAGE__STATE_DIR=str(state), PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist")
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "{state}" && '
        f'exec "{sys.executable}" -m pictguard.cli scan "{media}"'
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("size", "when"), [("256k", "mid-scan"), ("8k", "at start-up")], ids=["mid-scan", "start"]
)
def test_full_disk_is_one_clear_error(tmp_path: Path, size: str, when: str) -> None:
    result = scan_on_full_disk(tmp_path, size)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "pictguard.sqlite3" in errors[0]
    assert "PICTGUARD_STORAGE__STATE_DIR" in errors[0]
    if when == "mid-scan":
        assert "database or disk is full" in errors[0]
        assert "free space" in errors[0]
    assert "Traceback" not in result.stderr
    record("full_disk", when=when, tmpfs=size, exit_code=result.returncode, line=errors[0])
