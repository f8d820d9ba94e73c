"""pictguard's alerts: one rule file (helm/pictguard/files/alerts.yaml) that the chart's
PrometheusRule carries and docs/observability.md explains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helm.chart import (
    BROKERS,
    CHART_DIR,
    ROOT,
    VALUES_ALL,
    find,
    helm_binary,
    load_yaml,
    render,
)

ALERTS_FILE = CHART_DIR / "files" / "alerts.yaml"
DOC = ROOT / "docs" / "observability.md"


def file_rules() -> list[dict[str, object]]:
    (group,) = load_yaml(ALERTS_FILE)["groups"]
    rules: list[dict[str, object]] = group["rules"]
    return rules


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in file_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule  # type: ignore[index]
        assert rule["annotations"]["summary"], rule  # type: ignore[index]
        assert str(rule["expr"]).strip(), rule


def test_the_doc_explains_exactly_the_alerts_of_the_rule_file() -> None:
    doc = DOC.read_text()
    assert "helm/pictguard/files/alerts.yaml" in doc
    documented = set(re.findall(r"^\| `(Pictguard[A-Za-z]+)` \|", doc, re.M))
    assert documented == {str(r["alert"]) for r in file_rules()}


@pytest.mark.skipif(helm_binary() is None, reason="no helm binary")
def test_the_prometheus_rule_carries_the_file(tmp_path: Path) -> None:
    assert "PrometheusRule" not in {d["kind"] for d in render(BROKERS, tmp_path)}  # off by default
    rule = find(render(load_yaml(VALUES_ALL), tmp_path), "PrometheusRule", "pg-pictguard")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    rendered = {r.get("alert"): r for r in group["rules"]}
    # values-all.yaml leaves PictguardDown out and adds PictguardNoUploads.
    expected = {str(r["alert"]) for r in file_rules()} - {"PictguardDown"} | {"PictguardNoUploads"}
    assert set(rendered) == expected
    # Prometheus templates in annotations reach the cluster untouched by Helm.
    lag = rendered["PictguardSyncLaneLag"]["annotations"]["summary"]
    assert "{{ $value }}" in lag and "{{ $labels.group }}" in lag
