"""An admin at a shell: the installed ``pictguard`` command run as a subprocess, the way an
admin types it, and what the admin then reads (summaries, exit statuses, the audit, files).

Everything waits on observable state (a row in the state file, a port answering, a line in
a log) with generous timeouts; nothing sleeps and then asserts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.media import MediaItem, journey_set, write_set
from tests.servers import free_port

# `python -m pictguard` is what the installed `pictguard` script runs; this way the code
# of the checkout under test runs, whichever checkout installed the script.
PICTGUARD = [sys.executable, "-m", "pictguard"]

# Generous: the suite must pass on a machine whose cores are busy with other work.
COMMAND_TIMEOUT_S = 300.0
WAIT_TIMEOUT_S = 180.0

# What the demo runs, and what these journeys need: no CLIP weights exist offline.
CLASSIFIERS = "hashlist,nudenet"

# The journey set by file name (11 files: 8 images, a corrupt JPEG, a PDF, a text file).
IMAGES = [
    "photo-0320x0240.jpg",
    "photo-0800x0600.jpg",
    "photo-1920x1080-rotated.jpg",
    "photo-4000x3000.jpg",
    "screenshot-1280x0800.png",
    "photo-0640x0480.png",
    "photo-1600x1200.webp",
    "screenshot-0720x1560.webp",
]
BROKEN = ["corrupt.jpg", "document.pdf", "notes.txt"]


def media(seed: int = 0) -> list[MediaItem]:
    """The journey set for ``seed`` (generated in 1.5–2.5 s)."""
    return journey_set(seed)


@dataclass
class Result:
    """One finished command: what the admin saw."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ pictguard {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )

    def json(self) -> Any:
        return json.loads(self.stdout)

    def table(self) -> dict[str, str]:
        """The summary table's rows (``│ what │ value │``) as a dict."""
        rows = {}
        for line in self.stdout.splitlines():
            cells = line.split("│")
            if len(cells) == 4 and cells[1].strip():
                rows[cells[1].strip()] = cells[2].strip()
        return rows

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@dataclass
class Admin:
    """A shell with pictguard configured through the environment, in a working folder."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def at(cls, home: Path, **settings: str) -> Admin:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PICTGUARD_", "OTEL_"))}
        env.update(
            PICTGUARD_STORAGE__STATE_DIR=str(home / "state"),
            PICTGUARD_CLASSIFY__CLASSIFIERS=CLASSIFIERS,
            PICTGUARD_ENFORCE__QUARANTINE=str(home / "quarantine"),
            PICTGUARD_LOG__LEVEL="WARNING",
            COLUMNS="80",  # the width of a plain terminal; rich reads it
            NO_COLOR="1",
        )
        env.update(settings)
        return cls(home, env)

    @property
    def state_file(self) -> Path:
        return Path(self.env["PICTGUARD_STORAGE__STATE_DIR"]) / "pictguard.sqlite3"

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S, **env: str) -> Result:
        done = subprocess.run(
            [*PICTGUARD, *args],
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def start(self, *args: str, log: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a long-running command; its output goes to ``home/log``."""
        out = (self.home / log).open("wb")
        proc = subprocess.Popen(
            [*PICTGUARD, *args],
            env={**self.env, **env},
            cwd=self.home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.processes.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.home / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        """SIGTERM whatever is still running, then wait for it (SIGKILL as a last resort)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    # -- what the admin reads ----------------------------------------------------------

    def audit(self) -> list[dict[str, Any]]:
        """``pictguard audit --json``: every action, newest first."""
        result = self.run("audit", "--json", "--limit", "10000")
        assert result.returncode == 0, result
        rows: list[dict[str, Any]] = result.json()
        return rows

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Read the state file the way a waiting admin would peek at it (read-only)."""
        if not self.state_file.exists():
            return []
        with contextlib.closing(
            sqlite3.connect(f"file:{self.state_file}?mode=ro", uri=True, timeout=30)
        ) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                return []  # the tables are created by the first command that opens the file


def write_media(folder: Path, items: list[MediaItem]) -> dict[str, Path]:
    """Write ``items`` into ``folder``; their paths by file name."""
    return {item.name: path for item, path in zip(items, write_set(items, folder), strict=True)}


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Callable[[], str]) -> None:
    """Wait until ``url/readyz`` answers 200 while ``proc`` runs."""

    def ready() -> bool:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log()}"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        return False

    wait_until(ready, f"{url}/readyz")


def upload(url: str, item: MediaItem, chunk: int = 16 * 1024) -> httpx.Response:
    """POST ``item`` as pict-rs does: the raw bytes, streamed chunked (16 KiB at a time)."""

    def body() -> Iterator[bytes]:
        for start in range(0, len(item.data), chunk):
            yield item.data[start : start + chunk]

    return httpx.post(url, content=body(), headers={"Content-Type": item.content_type}, timeout=60)


def file_id(path: Path) -> str:
    """The object id pictguard gives a file (as in the audit)."""
    return f"file://{path.resolve()}"


def port() -> int:
    return free_port()


def object_id(row: dict[str, Any]) -> str:
    """The object id of an audit row (``pictguard audit --json``)."""
    ref = row["object"]
    if ref["store"] == "s3":
        return f"s3://{ref['bucket']}/{ref['key']}"
    return f"file://{ref['bucket'].rstrip('/')}/{ref['key']}"


def outcomes(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """How many audit rows each (object file name, action, outcome) has."""
    counts: dict[tuple[str, str, str], int] = {}
    for row in rows:
        if row.get("object") is None:
            continue
        key = (object_id(row), row["action"], row["outcome"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def acted_twice(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Objects with more than one ``done`` row for the same action: what must never be."""
    return sorted(
        (obj, action)
        for (obj, action, outcome), n in outcomes(rows).items()
        if outcome == "done" and n > 1
    )
