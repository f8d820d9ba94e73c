"""The `pictguard` command as an admin runs it: a subprocess with a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as the YAML file an admin would pass with ``-c``."""
    path.write_text(yaml.safe_dump(config))
    return path


def pictguard(config: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``pictguard -c CONFIG ARGS…`` with no PICTGUARD_* variables from the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a ``--json`` command printed (its output says why if there is none)."""
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"exit {result.returncode}, no JSON:\n{result.stdout}\n{result.stderr}"
        ) from None
