"""Each role's pods see only the secrets that role uses, and the scan API is never opened to
the internet through an ingress without trusted proxies and client tokens (helm binary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import (
    BROKERS,
    VALUES_ALL,
    VALUES_SINGLE,
    find,
    helm_binary,
    helm_output,
    load_yaml,
    merge,
    pod_specs,
    render,
    visible_secrets,
)

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="no helm binary (set HELM_BIN or put helm on PATH)"
)

KAFKA = {"PICTGUARD_KAFKA__SASL_USERNAME", "PICTGUARD_KAFKA__SASL_PASSWORD"}
S3 = {"PICTGUARD_S3__ACCESS_KEY_ID", "PICTGUARD_S3__SECRET_ACCESS_KEY"}
WEBHOOKS = {
    "PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN",
    "PICTGUARD_INGEST__WEBHOOK__CEPH_TOKEN",
    "PICTGUARD_INGEST__WEBHOOK__B2_SECRET",
}

# values-all.yaml: which secret variables each workload may see, and whose S3 keys.
EXPECTED = {
    "Deployment/pg-pictguard-validate-api": (KAFKA | {"PICTGUARD_API__CLIENTS"}, None),
    "Deployment/pg-pictguard-classify": (KAFKA | S3, "AKIAREADONLY"),
    "Deployment/pg-pictguard-ingest": (
        KAFKA | S3 | WEBHOOKS | {"PICTGUARD_INGEST__SQS__SECRET_ACCESS_KEY"},
        "AKIAREADONLY",
    ),
    "Deployment/pg-pictguard-enforce": (
        KAFKA | S3 | {"PICTGUARD_ENFORCE__NOTIFY__CHANNELS"},
        "AKIAREADWRITE",
    ),
    "Job/pg-pictguard-topics": (KAFKA, None),
    "CronJob/pg-pictguard-backfill": (KAFKA | S3, "AKIAREADONLY"),
    "CronJob/pg-pictguard-reconcile": (KAFKA | S3, "AKIAREADONLY"),
}

# Secrets that must never reach a process that parses untrusted images.
NOT_FOR_IMAGE_PARSERS = [
    "example-write-secret",  # S3 keys that may delete
    "example-smtp-password",
    "example-matrix-token",
    "example-minio-token",
    "example-ceph-token",
    "example-b2-secret",
    "example-sqs-secret",
]


def test_each_role_sees_only_the_secrets_it_uses(tmp_path: Path) -> None:
    manifests = render(load_yaml(VALUES_ALL), tmp_path)
    specs = pod_specs(manifests)
    assert specs.keys() == EXPECTED.keys()
    for name, (keys, s3_key) in EXPECTED.items():
        seen = visible_secrets(manifests, specs[name])
        assert set(seen) == keys, name
        if s3_key:
            assert seen["PICTGUARD_S3__ACCESS_KEY_ID"] == s3_key, name
    for name in ("Deployment/pg-pictguard-validate-api", "Deployment/pg-pictguard-classify"):
        blob = repr(visible_secrets(manifests, specs[name]))
        for secret in NOT_FOR_IMAGE_PARSERS:
            assert secret not in blob, (name, secret)


def test_a_secret_without_a_section_goes_to_every_role_and_a_sectioned_one_to_its_own(
    tmp_path: Path,
) -> None:
    values = merge(
        BROKERS,
        {
            "secrets": {
                "env": {
                    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer t",
                    "PICTGUARD_ENFORCE__GUARD__ENABLED": "true",
                    "PICTGUARD_KAFKA__SASL_MECHANISM": "PLAIN",
                }
            }
        },
    )
    manifests = render(values, tmp_path)
    for name, spec in pod_specs(manifests).items():
        seen = set(visible_secrets(manifests, spec))
        assert "OTEL_EXPORTER_OTLP_HEADERS" in seen, name
        assert "PICTGUARD_KAFKA__SASL_MECHANISM" in seen, name
        assert ("PICTGUARD_ENFORCE__GUARD__ENABLED" in seen) == name.endswith("-enforce"), name


def test_a_role_can_use_a_secret_of_its_own(tmp_path: Path) -> None:
    values = merge(
        load_yaml(VALUES_ALL),
        {
            "secrets": {
                "existingSecrets": {"enforce": "enforce-keys"},
                "s3ReadWrite": None,
                "notifyChannels": None,
                "kafka": None,
            }
        },
    )
    manifests = render(values, tmp_path)
    secrets = {d["metadata"]["name"] for d in manifests if d["kind"] == "Secret"}
    assert "pg-pictguard-enforce" not in secrets
    assert "pg-pictguard-classify" in secrets
    enforce = pod_specs(manifests)["Deployment/pg-pictguard-enforce"]
    assert enforce["containers"][0]["envFrom"][0] == {"secretRef": {"name": "enforce-keys"}}
    deployment = find(manifests, "Deployment", "pg-pictguard-enforce")
    # The chart cannot see that Secret change, so it cannot roll the pods for it.
    assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_single_mode_keeps_kafka_credentials_out(tmp_path: Path) -> None:
    manifests = render(load_yaml(VALUES_SINGLE), tmp_path)
    (spec,) = pod_specs(manifests).values()
    seen = visible_secrets(manifests, spec)
    assert not [k for k in seen if k.startswith("PICTGUARD_KAFKA__")]
    assert seen["PICTGUARD_S3__ACCESS_KEY_ID"] == "AKIAREADWRITE"
    assert seen["PICTGUARD_ENFORCE__ADMIN_TOKEN"] == "example-admin-token"


API_CLIENT = {"id": "lemmy", "cidrs": ["10.0.0.0/8"]}
INGRESS = {"validateApi": {"ingress": {"enabled": True}}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        pytest.param(
            merge(INGRESS, {"secrets": {"api": {"clients": [{**API_CLIENT, "token": "t"}]}}}),
            "validateApi.ingress.enabled exposes the scan API, but "
            "config.api.trusted_proxies is empty",
            id="ingress-without-trusted-proxies",
        ),
        pytest.param(
            merge(
                INGRESS,
                {
                    "config": {"api": {"trusted_proxies": ["10.42.0.0/16"]}},
                    "secrets": {"api": {"clients": [API_CLIENT]}},
                },
            ),
            "these API clients have no token: lemmy",
            id="ingress-client-without-token",
        ),
        pytest.param(
            {
                "validateApi": {"service": {"type": "LoadBalancer"}},
                "secrets": {"api": {"clients": [API_CLIENT]}},
            },
            "(validateApi.ingress or a LoadBalancer Service)",
            id="load-balancer-client-without-token",
        ),
        pytest.param(
            {
                "mode": "single",
                "single": {"ingress": {"enabled": True}},
                "secrets": {"api": {"clients": [{**API_CLIENT, "token": "t"}]}},
            },
            "single.ingress.enabled exposes the scan API",
            id="single-ingress-without-trusted-proxies",
        ),
    ],
)
def test_an_api_open_to_the_internet_stops_the_install(
    tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    done = helm_output(merge(BROKERS, override), tmp_path)
    assert done.returncode != 0
    assert message in done.stderr


def test_an_ingress_with_trusted_proxies_and_tokens_installs(tmp_path: Path) -> None:
    values = merge(
        BROKERS,
        merge(
            INGRESS,
            {
                "config": {"api": {"trusted_proxies": ["10.42.0.0/16"]}},
                "secrets": {"api": {"clients": [{**API_CLIENT, "token": "t"}]}},
            },
        ),
    )
    kinds = {d["kind"] for d in render(values, tmp_path)}
    assert "Ingress" in kinds
