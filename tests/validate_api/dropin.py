"""Helpers of the drop-in tests: pictguard processes with the colour model, the pict-rs-style
client, and what enforce told the admins."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.enforce.receivers import HttpReceiver
from tests.fakes.pictrs import PICTRS_USER_AGENT
from tests.validate_api.helpers import Stack

# pict-rs streams the upload to the validation URL in chunks of this size, without a
# Content-Length.
PICTRS_CHUNK = 16 * 1024
COLOUR_CLI = [sys.executable, "-m", "tests.validate_api.colour_cli"]


def launch(
    stack: Stack, args: list[str], config: dict[str, Any], tmp: Path, name: str, **env: str
) -> subprocess.Popen[bytes]:
    """Start the pictguard CLI (colour model registered) with ``config``, logging to
    ``tmp/<name>.log``; ``stack.stop()`` ends it."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"{name}.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    environment.update(PYTHONUNBUFFERED="1", **env)
    proc = subprocess.Popen(
        [*COLOUR_CLI, "-c", str(path), *args],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack.procs.append(proc)
    stack.logs.append(log)
    return proc


def webhook(url: str, min_severity: str = "info") -> dict[str, Any]:
    """A notification channel that sends every notice at once, one message each."""
    return {
        "type": "webhook",
        "url": url,
        "min_severity": min_severity,
        "digest_interval_s": 0,
        "retry_initial_s": 0,
    }


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), PICTRS_CHUNK):
        yield data[i : i + PICTRS_CHUNK]


async def pictrs_validate(url: str, data: bytes, content_type: str) -> httpx.Response:
    """POST ``data`` to a validation URL the way pict-rs 0.5 does: the raw body streamed in
    16 KiB chunks (no Content-Length), its own User-Agent, a 30 s timeout."""
    headers = {"Content-Type": content_type, "User-Agent": PICTRS_USER_AGENT}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, content=_chunks(data), headers=headers)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` with ``labels`` on ``url``'s /metrics (0 if none)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def unverified_notices(receiver: HttpReceiver) -> list[dict[str, Any]]:
    """The "uploads accepted without a verdict" warnings delivered so far."""
    with receiver.lock:
        bodies = [r.json() for r in receiver.requests]
    found = []
    for body in bodies:
        items = body.get("items", []) if body.get("event") == "digest" else [body]
        found += [item for item in items if item.get("event") == "unverified_accepts"]
    return found


def unverified_counts(receiver: HttpReceiver) -> dict[str, int]:
    """The per-reason counts of every such warning, added up."""
    total: dict[str, int] = {}
    for notice in unverified_notices(receiver):
        for reason, count in notice["reasons"].items():
            total[reason] = total.get(reason, 0) + count
    return total


def action_notices(receiver: HttpReceiver) -> list[dict[str, Any]]:
    """The enforcement-action notices delivered so far."""
    with receiver.lock:
        bodies = [r.json() for r in receiver.requests]
    return [b for b in bodies if b.get("event") == "action"]
