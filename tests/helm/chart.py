"""Helpers to check helm/pictguard with Helm's own Go code.

Two ways in, both real Helm:

- helm-sdkpy (PyPI) embeds the Helm library: `lint` renders every template and validates the
  values against values.schema.json, offline. It only reads the chart's own values.yaml, so
  each call lints a copy of the chart whose values.yaml holds the merged values.
- a `helm` binary (HELM_BIN, the virtualenv's bin/ or PATH) renders manifests with
  `helm template`; tests that need one skip without it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_sdkpy  # pip install --no-deps --ignore-requires-python helm-sdkpy (see Makefile)
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "pictguard"
VALUES_ALL = Path(__file__).with_name("values-all.yaml")
# mode: single with every option that applies to it switched on.
VALUES_SINGLE = Path(__file__).with_name("values-single.yaml")
BROKERS: dict[str, Any] = {"config": {"kafka": {"bootstrap_servers": "kafka.kafka:9092"}}}

# Helm's lint severities (helm.sh/helm/v4/pkg/chart/v2/lint/support).
INFO, WARNING, ERROR = 1, 2, 3


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def default_values() -> dict[str, Any]:
    return load_yaml(CHART_DIR / "values.yaml")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge values the way Helm does: maps recursively, lists replaced, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 to `path`: Helm's Go code logs there, below Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclass
class LintReport:
    messages: list[tuple[int, str]]
    log: str

    @property
    def problems(self) -> list[tuple[int, str]]:
        """Warnings and errors as (severity, path); helm-sdkpy carries no error text."""
        return [(sev, path) for sev, path in self.messages if sev >= WARNING]

    @property
    def guard_failures(self) -> list[str]:
        """Messages of the chart's `fail` guards: lint logs them instead of stopping."""
        return re.findall(r'funcMap fail.*?message="?((?:[^"\\]|\\.)*)"?$', self.log, re.M)


def lint(values: dict[str, Any], workdir: Path) -> LintReport:
    """Lint a copy of the chart whose values.yaml is `values` (already merged)."""
    chart = Path(tempfile.mkdtemp(dir=workdir)) / "pictguard"
    shutil.copytree(CHART_DIR, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    log_file = workdir / "helm-lint.log"
    with _stderr_to(log_file):
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(chart)))
    messages = [(int(m["Severity"]), str(m["Path"])) for m in result.get("Messages") or []]
    return LintReport(messages=messages, log=log_file.read_text(errors="replace"))


def helm_binary() -> str | None:
    """A helm executable: $HELM_BIN, then the virtualenv's bin/, then PATH."""
    explicit = os.environ.get("HELM_BIN")
    if explicit:
        return explicit
    beside_python = Path(sys.prefix) / "bin" / "helm"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("helm")


def helm(
    *args: str, values: dict[str, Any] | None, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run `helm <args> <chart> -f <values>` offline; the caller checks returncode."""
    binary = helm_binary()
    assert binary, "no helm binary"
    values_file = Path(tempfile.mkstemp(suffix=".yaml", dir=workdir)[1])
    values_file.write_text(yaml.safe_dump(values or {}, sort_keys=False))
    env = {
        **os.environ,
        # Keep Helm away from the admin's kubeconfig, repositories and caches.
        "HELM_CONFIG_HOME": str(workdir / "helm-config"),
        "HELM_CACHE_HOME": str(workdir / "helm-cache"),
        "HELM_DATA_HOME": str(workdir / "helm-data"),
        "KUBECONFIG": str(workdir / "no-kubeconfig"),
    }
    return subprocess.run(
        [binary, *args, str(CHART_DIR), "-f", str(values_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def render(values: dict[str, Any], workdir: Path, release: str = "pg") -> list[dict[str, Any]]:
    """Render the chart with `helm template` (hooks included) and parse the manifests."""
    done = helm("template", release, "--namespace", "mod", values=values, workdir=workdir)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs of every workload, keyed by "<Kind>/<name>"."""
    specs = {}
    for doc in manifests:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Deployment", "Job"):
            specs[f"{kind}/{name}"] = doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            specs[f"{kind}/{name}"] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    present = [f"{d['kind']}/{d['metadata']['name']}" for d in manifests]
    raise AssertionError(f"no {kind}/{name} among {present}")


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def secret_env(manifests: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The environment variables a chart-made Secret holds, decoded."""
    data = find(manifests, "Secret", name).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def visible_secrets(manifests: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, str]:
    """Every secret environment variable any container of the pod receives (decoded)."""
    seen: dict[str, str] = {}
    for container in containers(spec):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                seen.update(secret_env(manifests, source["secretRef"]["name"]))
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                seen[entry["name"]] = secret_env(manifests, ref["name"])[ref["key"]]
    return seen


def helm_output(values: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`helm template` of `values` (for tests that expect a failure)."""
    return helm("template", "pg", "--namespace", "mod", values=values, workdir=workdir)


def install_notes(values: dict[str, Any], workdir: Path) -> str | None:
    """What `helm install` prints (NOTES.txt), or None when this helm needs a cluster."""
    done = helm(
        "install", "pg", "--namespace", "mod", "--dry-run=client", values=values, workdir=workdir
    )
    if "cluster unreachable" in done.stderr:
        return None  # helm 3.x needs a cluster for install --dry-run; helm 4 does not
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


def load_schema_generator() -> Any:
    """docs/gen_helm_schema.py as a module (docs/ is not a package)."""
    path = ROOT / "docs" / "gen_helm_schema.py"
    spec = importlib.util.spec_from_file_location("gen_helm_schema", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
