"""mode: single — one `pictguard serve` Deployment, state on a PVC, no Kafka (helm binary)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pictguard.settings import load_settings
from tests.helm.chart import (
    VALUES_SINGLE,
    containers,
    env_of,
    find,
    helm_binary,
    install_notes,
    load_yaml,
    merge,
    pod_specs,
    render,
    secret_env,
)

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="no helm binary (set HELM_BIN or put helm on PATH)"
)

SINGLE = {"mode": "single"}


def test_single_mode_is_one_serve_deployment_with_its_state_on_a_volume(tmp_path: Path) -> None:
    manifests = render(SINGLE, tmp_path)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in manifests)
    assert kinds == [
        "ConfigMap/pg-pictguard",
        "Deployment/pg-pictguard-server",
        "PersistentVolumeClaim/pg-pictguard-server-state",
        "Secret/pg-pictguard-server",
        "Service/pg-pictguard-server",
        "ServiceAccount/pg-pictguard",
    ]  # no topic hook, no KEDA, no per-role Deployments
    deployment = find(manifests, "Deployment", "pg-pictguard-server")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one RWO volume
    spec = deployment["spec"]["template"]["spec"]
    (main,) = spec["containers"]
    assert main["args"][2:] == ["serve"]
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8080, "webhook": 8081}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "pg-pictguard-server-state"
    claim = find(manifests, "PersistentVolumeClaim", "pg-pictguard-server-state")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The slim image by default: no -cuda tag, no CLIP download, no GPU.
    assert main["image"] == "ghcr.io/pictguard/pictguard:0.1.0"
    assert "initContainers" not in spec
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    service = find(manifests, "Service", "pg-pictguard-server")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "webhook": "webhook",
    }


def test_single_mode_has_no_kafka_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(load_yaml(VALUES_SINGLE), tmp_path)
    text = yaml.safe_dump_all(manifests)
    assert "kafka" not in text.lower()  # no topic hook, ScaledObject, setting or credential
    config_text = find(manifests, "ConfigMap", "pg-pictguard")["data"]["config.yaml"]
    config = yaml.safe_load(config_text)
    assert "kafka" not in config
    (spec,) = pod_specs(manifests).values()
    for container in containers(spec):
        assert not [n for n in env_of(container) if "KAFKA" in n]

    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    for key, value in secret_env(manifests, "pg-pictguard-server").items():
        monkeypatch.setenv(key, value)
    settings = load_settings(path)
    assert settings.storage.backend == "sqlite"
    assert str(settings.storage.state_dir) == "/var/lib/pictguard"
    assert settings.ingest.webhook.enabled is True
    assert settings.ingest.reconcile.locations == ["s3://pictrs"]
    assert [c.id for c in settings.api.clients] == ["lemmy"]


def test_single_mode_with_every_option(tmp_path: Path) -> None:
    manifests = render(load_yaml(VALUES_SINGLE), tmp_path)
    spec = pod_specs(manifests)["Deployment/pg-pictguard-server"]
    main = spec["containers"][0]
    assert main["image"] == "ghcr.io/pictguard/pictguard:0.1.0-cuda"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["runtimeClassName"] == "nvidia"
    assert [c["args"][2:] for c in spec["initContainers"]] == [["models", "--download"]]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert (
        volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
        == "pg-pictguard-server-model-cache"
    )
    ingress = find(manifests, "Ingress", "pg-pictguard-server")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "pg-pictguard-server", "port": {"number": 8080}}
    metrics = find(manifests, "Service", "pg-pictguard-server-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "http"
    policy = find(manifests, "NetworkPolicy", "pg-pictguard-server")
    assert sorted(rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]) == [
        8080,
        8080,
        8081,
    ]


def test_notes_give_pict_rs_the_url_and_the_client_setting(tmp_path: Path) -> None:
    notes = install_notes(SINGLE, tmp_path)
    if notes is None:
        pytest.skip("this helm (3.x) needs a cluster for install --dry-run; helm 4 does not")
    url = "http://pg-pictguard-server.mod.svc.cluster.local:8080/api/v1/scan/<client id>"
    assert f"PICTRS__MEDIA__EXTERNAL_VALIDATION={url}" in notes
    # No client yet: the notes show the api.clients setting to add.
    assert "secrets:\n         api:\n           clients:\n             - id: lemmy" in notes

    with_client = merge(
        SINGLE, {"secrets": {"api": {"clients": [{"id": "lemmy", "cidrs": ["10.42.0.0/16"]}]}}}
    )
    (tmp_path / "2").mkdir()
    notes = install_notes(with_client, tmp_path / "2")
    assert notes is not None
    assert (
        "PICTRS__MEDIA__EXTERNAL_VALIDATION="
        "http://pg-pictguard-server.mod.svc.cluster.local:8080/api/v1/scan/lemmy\n"
    ) in notes
    assert "- id: lemmy, cidrs: 10.42.0.0/16" in notes
    assert "Mode: single" in notes
    assert "CLIP" in notes  # the default classifiers name clip, the slim image cannot run it


def test_single_mode_manifests_match_the_kubernetes_api(tmp_path: Path) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    for values in (SINGLE, load_yaml(VALUES_SINGLE)):
        for doc in render(values, tmp_path):
            if doc["apiVersion"].split("/")[0] == "monitoring.coreos.com":
                continue  # CRDs: no schema shipped with Kubernetes
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
