"""pictguard processes for the remote-worker tests: `pictguard serve`, `run api` and remote
workers, each a real subprocess with a config file and a log of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# The CLI with the test colour model registered (see worker_main.py).
PICTGUARD = [sys.executable, "-m", "tests.classify.remote.worker_main"]


class Processes:
    """Starts pictguard processes and makes sure none outlives the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, args: list[str], config: dict[str, Any], **env: str
    ) -> subprocess.Popen[bytes]:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
        environment.update(PYTHONUNBUFFERED="1", **env)
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [*PICTGUARD, "-c", str(path), *args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.procs)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
