"""Helpers of the tests under tests/validate_api/ (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import FAST_GROUPS, Broker, poll_ready

CLIENT = "pictrs-test"


@dataclass
class Stack:
    urls: list[str]
    config: dict[str, Any]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    # The configuration enforce runs with (its state file holds the audit).
    enforce_config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls[0]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def base_config(tmp: Path, notify_url: str | None = None, **api: Any) -> dict[str, Any]:
    channels = []
    if notify_url is not None:
        # Every action, one message each, at once: what the tests look for.
        channels.append(
            {
                "type": "webhook",
                "url": notify_url,
                "min_severity": "info",
                "digest_interval_s": 0,
                "retry_initial_s": 0,
            }
        )
    return {
        "storage": {"state_dir": str(tmp / "state")},
        "classify": {"classifiers": ["hashlist", "nudenet"]},
        "enforce": {"notify": {"channels": channels}},
        "api": {
            "host": "127.0.0.1",
            "deadline_s": 3,
            "clients": [
                {"id": CLIENT, "cidrs": ["127.0.0.0/8", "::1/128"]},
                {"id": "elsewhere", "cidrs": ["10.0.0.0/8"]},
                {"id": "script", "token": "s3cret-token-0123456789"},
            ],
            **api,
        },
        "log": {"level": "INFO"},
    }


def start(
    stack: Stack, args: list[str], config: dict[str, Any], tmp: Path, name: str
) -> subprocess.Popen[bytes]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pictguard.cli", "-c", str(path), *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack.procs.append(proc)
    stack.logs.append(log)
    return proc


def wait_ready(stack: Stack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    for url in stack.urls:
        if not poll_ready(
            url, lambda: all(p.poll() is None for p in stack.procs), deadline - time.monotonic()
        ):
            logs = "\n".join(p.read_text()[-3000:] for p in stack.logs)
            stack.stop()
            raise RuntimeError(f"API at {url} never became ready:\n{logs}")


def warm_up(stack: Stack, timeout: float = 90) -> None:
    """Ready means a request gets a verdict: the whole round trip where classify runs
    apart (it joined its group), the final hash-list answer where serve has no model."""
    from pipeline.samples import image_bytes

    deadline = time.monotonic() + timeout
    for url in stack.urls:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            response = httpx.post(
                f"{url}/api/v1/scan/{CLIENT}",
                content=image_bytes(900_000 + i + 1000 * stack.urls.index(url), "PNG", 16),
                timeout=30,
            )
            if response.json().get("path") in ("model", "fast"):
                break
        else:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in stack.logs)
            raise RuntimeError(f"no verdict through {url} within {timeout}s:\n{logs}")


def kafka_config(
    tmp: Path, broker: Broker, prefix: str, notify_url: str | None = None, **api: Any
) -> dict[str, Any]:
    config = base_config(tmp, notify_url, **api)
    config["kafka"] = {
        "bootstrap_servers": broker.bootstrap,
        "topic_prefix": prefix,
        "partitions": 4,
        "consumer_overrides": FAST_GROUPS,
        # Groups of their own: a member another test killed must not stall these joins.
        "group_prefix": f"{prefix}pg-",
    }
    config["storage"]["backend"] = "kafka"
    # Roles beside other tests' roles on this host: any free health port (a role whose
    # port is taken does not start).
    config["metrics"] = {"port": 0}
    return config
