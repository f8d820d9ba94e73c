"""Run ``pictguard`` as an admin does: a config file, a subprocess, its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.servers import S3Server


def write_config(tmp_path: Path, s3: S3Server, **sections: Any) -> Path:
    """A YAML config for the moto server, a state dir under ``tmp_path``, and ``sections``."""
    config: dict[str, Any] = {
        "s3": {
            "endpoint_url": s3.endpoint,
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
            "path_style": True,
        },
        "storage": {"state_dir": str(tmp_path / "state")},
        "classify": {"classifiers": ["hashlist"]},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pictguard(
    config: Path, *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pictguard -c config ARGS`` in a fresh process (no PICTGUARD_* from this one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICTGUARD_", "OTEL_"))}
    env["COLUMNS"] = "250"  # one table row per line
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
