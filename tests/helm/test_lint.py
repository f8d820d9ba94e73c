"""The chart lints clean and its values schema refuses what cannot work (helm-sdkpy, offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.helm.chart import (
    CHART_DIR,
    ERROR,
    VALUES_ALL,
    VALUES_SINGLE,
    default_values,
    lint,
    load_yaml,
    merge,
)

BROKERS = {"config": {"kafka": {"bootstrap_servers": "kafka.kafka:9092"}}}


def schema() -> dict[str, Any]:
    data = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert isinstance(data, dict)
    return data


def schema_errors(values: dict[str, Any]) -> list[str]:
    """Where values.schema.json rejects `values`, as "/path: message" (for readable failures)."""
    validator = jsonschema.Draft7Validator(schema())
    return [
        "/" + "/".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(values)
    ]


def test_chart_lints_clean_with_default_values(tmp_path: Path) -> None:
    report = lint(default_values(), tmp_path)
    assert report.problems == [], "run `helm lint helm/pictguard` for the messages"


def test_chart_lints_clean_with_every_option_enabled(tmp_path: Path) -> None:
    report = lint(merge(default_values(), load_yaml(VALUES_ALL)), tmp_path)
    assert report.problems == [], "run `helm lint helm/pictguard -f tests/helm/values-all.yaml`"
    assert report.guard_failures == []


def test_chart_lints_clean_in_single_mode(tmp_path: Path) -> None:
    for values in ({"mode": "single"}, load_yaml(VALUES_SINGLE)):
        report = lint(merge(default_values(), values), tmp_path)
        assert report.problems == [], (
            "run `helm lint helm/pictguard -f tests/helm/values-single.yaml`"
        )
        assert report.guard_failures == []  # no Kafka brokers needed


def test_install_with_default_values_asks_for_the_kafka_brokers(tmp_path: Path) -> None:
    # `helm install` stops at the first failing guard; lint logs every one it meets instead.
    report = lint(default_values(), tmp_path)
    assert len(report.guard_failures) == 1
    assert "config.kafka.bootstrap_servers is empty" in report.guard_failures[0]


def test_no_guard_fires_once_the_brokers_are_set(tmp_path: Path) -> None:
    assert lint(merge(default_values(), BROKERS), tmp_path).guard_failures == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"backfill": {"enabled": True}}, "backfill.targets is empty"),
        ({"reconcile": {"enabled": True}}, "reconcile.targets is empty"),
        (
            {"secrets": {"existingSecret": "mine", "s3ReadOnly": {"secretAccessKey": "x"}}},
            "secrets.existingSecret is set together with secret values",
        ),
        (
            {
                "secrets": {
                    "existingSecrets": {"enforce": "enforce-keys"},
                    "notifyChannels": [{"type": "slack", "url": "https://hooks.example/x"}],
                }
            },
            "secrets.existingSecrets.enforce is set, but these values under secrets.* would "
            "go to that role too: PICTGUARD_ENFORCE__NOTIFY__CHANNELS",
        ),
        (
            {"secrets": {"s3": {"accessKeyId": "AKIA", "secretAccessKey": "x"}}},
            "secrets.s3 was split by permission",
        ),
        (
            {"secrets": {"env": {"PICTGUARD_S3__SECRET_ACCESS_KEY": "x"}}},
            "secrets.env.PICTGUARD_S3__SECRET_ACCESS_KEY: S3 credentials go under",
        ),
        (
            {"secrets": {"env": {"AWS_SECRET_ACCESS_KEY": "x"}}},
            "secrets.env.AWS_SECRET_ACCESS_KEY: S3 credentials go under",
        ),
        (
            {"secrets": {"adminToken": "x"}},
            "secrets.adminToken is set, but with mode distributed",
        ),
        (
            {"mode": "single", "backfill": {"enabled": True, "targets": ["s3://pictrs"]}},
            "backfill.enabled needs Kafka (mode distributed)",
        ),
        (
            {"mode": "single", "reconcile": {"enabled": True, "targets": ["s3://pictrs"]}},
            "reconcile.enabled (the CronJob) needs Kafka (mode distributed)",
        ),
        (
            {"validateApi": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
            "minReplicas is greater than maxReplicas",
        ),
        (
            {"classify": {"keda": {"enabled": True, "minReplicaCount": 4, "maxReplicaCount": 2}}},
            "minReplicaCount is greater than maxReplicaCount",
        ),
    ],
)
def test_contradictory_values_stop_the_install_with_a_message(
    tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    report = lint(merge(default_values(), merge(BROKERS, override)), tmp_path)
    assert any(message in failure for failure in report.guard_failures), report.log


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def test_schema_accepts_the_default_and_the_full_values() -> None:
    assert schema_errors(default_values()) == []
    assert schema_errors(merge(default_values(), load_yaml(VALUES_ALL))) == []
    assert schema_errors(merge(default_values(), load_yaml(VALUES_SINGLE))) == []


BAD_VALUES = [
    pytest.param(
        {"config": {"api": {"on_timeout": "maybe"}}},
        "/config/api/on_timeout",
        id="unknown-on_timeout",
    ),
    pytest.param(
        {"validateApi": {"replicaCount": -1}}, "/validateApi/replicaCount", id="negative-replicas"
    ),
    pytest.param({"classify": {"gpu": {"count": "two"}}}, "/classify/gpu/count", id="wrong-type"),
    pytest.param({"enforce": {"enabled": "yes"}}, "/enforce/enabled", id="string-for-boolean"),
    pytest.param({"validateAPI": {"enabled": True}}, "/", id="misspelled-key"),
    pytest.param(
        {"config": {"kafka": {"security_protocol": "TLS"}}},
        "/config/kafka/security_protocol",
        id="kafka-protocol",
    ),
    pytest.param(
        {"config": {"enforce": {"on_flag_csam": "shred"}}},
        "/config/enforce/on_flag_csam",
        id="enforce-action",
    ),
    pytest.param(
        {"config": {"s3": {"secret_access_key": "x"}}},
        "/config/s3/secret_access_key",
        id="secret-in-configmap",
    ),
    pytest.param({"config": {"api": {"port": 9999}}}, "/config/api/port", id="port-outside-ports"),
    pytest.param({"config": {"telemetryy": {}}}, "/config", id="unknown-config-section"),
    pytest.param(
        {"classify": {"keda": {"minReplicaCount": 0}}},
        "/classify/keda/minReplicaCount",
        id="keda-scale-to-zero",
    ),
    pytest.param(
        {"backfill": {"targets": ["http://bucket"]}}, "/backfill/targets/0", id="target-not-s3"
    ),
    pytest.param({"reconcile": {"schedule": "every hour"}}, "/reconcile/schedule", id="bad-cron"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="pull-policy"),
    # config.* is generated from the settings model: closed at every level.
    pytest.param({"config": {"enforce": {"dryrun": True}}}, "/config/enforce", id="enforce-dryrun"),
    pytest.param(
        {"config": {"enforce": {"guard": {"max_per_minute": 5}}}},
        "/config/enforce/guard",
        id="nested-typo",
    ),
    pytest.param(
        {"config": {"classify": {"max_batch": 0}}}, "/config/classify/max_batch", id="minimum"
    ),
    pytest.param(
        {"config": {"storage": {"backend": "kafka"}}},
        "/config/storage/backend",
        id="backend-owned-by-mode",
    ),
    pytest.param(
        {"config": {"api": {"replica_id": "a"}}}, "/config/api/replica_id", id="shared-replica-id"
    ),
    pytest.param(
        {"config": {"enforce": {"admin_token": "x"}}},
        "/config/enforce/admin_token",
        id="admin-token-in-configmap",
    ),
    pytest.param(
        {"secrets": {"api": {"clients": [{"id": "lemmy", "cidr": ["10.0.0.0/8"]}]}}},
        "/secrets/api/clients/0",
        id="client-typo",
    ),
    pytest.param(
        {"secrets": {"notifyChannels": [{"type": "matrix", "homeserver": "https://m.example"}]}},
        "/secrets/notifyChannels/0",
        id="channel-missing-keys",
    ),
    pytest.param({"mode": "both"}, "/mode", id="mode"),
    pytest.param(
        {"classify": {"image": {"tagSuffix": "-cuda"}}}, "/classify/image", id="tagSuffix-renamed"
    ),
    pytest.param({"single": {"image": {"flavour": "rocm"}}}, "/single/image/flavour", id="flavour"),
]


@pytest.mark.parametrize(("override", "where"), BAD_VALUES)
def test_schema_rejects_bad_values(tmp_path: Path, override: dict[str, Any], where: str) -> None:
    values = merge(default_values(), merge(BROKERS, override))
    errors = schema_errors(values)
    assert any(e.split(": ", 1)[0] == where for e in errors), errors
    # Helm itself refuses them: lint reports an error on values.yaml.
    report = lint(values, tmp_path)
    assert (ERROR, "values.yaml") in report.messages


def test_parent_charts_may_pass_global_values(tmp_path: Path) -> None:
    values = merge(default_values(), {"global": {"imageRegistry": "registry.example.org"}})
    assert schema_errors(values) == []
    assert lint(values, tmp_path).problems == []


def test_defaults_run_hardened_pods() -> None:
    values = default_values()
    pod, container = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert values["serviceAccount"]["automountServiceAccountToken"] is False
    assert values["classify"]["gpu"] == {
        "enabled": True,
        "count": 1,
        "resourceName": "nvidia.com/gpu",
    }
