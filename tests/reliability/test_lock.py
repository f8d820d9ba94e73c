"""Dependencies are pinned: uv.lock matches pyproject.toml, and `make env` installs it.

Before this fix pyproject.toml had lower bounds only and nothing recorded which versions
the tests had passed with; every fresh environment (CI, a Docker build) could take new
releases. How to refresh the lock: docs/SECURITY.md, "Dependencies".
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def test_the_lock_matches_pyproject() -> None:
    """`uv lock --check` offline: the lock was made from this pyproject.toml."""
    assert LOCK.is_file(), "uv.lock is missing: run `make lock` and commit it"
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed here (make env installs it)")
    result = subprocess.run(
        [uv, "lock", "--check", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"uv.lock does not match pyproject.toml: run `make lock` and commit uv.lock\n"
        f"{result.stderr[-2000:]}"
    )


def test_every_requirement_is_locked_to_one_version() -> None:
    """Each of pictguard's requirements resolves to pinned versions in the lock."""
    lock = tomllib.loads(LOCK.read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(_norm(package["name"]), set()).add(package["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += [r for r in extra if not r.startswith("pictguard[")]
    missing = []
    for requirement in wanted:
        name = _norm(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])
        if name not in versions:
            missing.append(name)
    assert missing == [], f"not in uv.lock: {missing}"
    for package in lock["package"]:
        if package["name"] != "pictguard":
            # Registry packages carry hashes, so an install can check every file.
            files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
            assert files and all("hash" in f for f in files), package["name"]


def test_this_environment_has_the_locked_versions() -> None:
    """Where `make env` built this environment from the current lock, it installed it."""
    stamp = Path(sys.prefix) / ".installed-stamp"
    if not stamp.exists() or stamp.stat().st_mtime < LOCK.stat().st_mtime:
        pytest.skip("this environment was not built by `make env` from the current uv.lock")
    lock = tomllib.loads(LOCK.read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(_norm(package["name"]), set()).add(package["version"])
    wrong = []
    for dist in metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if name in versions and name != "pictguard":
            installed = dist.version.split("+")[0]
            if installed not in {v.split("+")[0] for v in versions[name]}:
                wrong.append(f"{name} {dist.version} (lock: {sorted(versions[name])})")
    assert wrong == [], f"installed versions differ from uv.lock: {wrong}"
