"""What the chart deploys, read from manifests rendered by a real `helm` binary.

Skipped when no helm binary is found (HELM_BIN, the virtualenv's bin/helm, or PATH):
helm-sdkpy cannot render without a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pictguard.settings import load_settings
from tests.helm.chart import (
    BROKERS,
    VALUES_ALL,
    VALUES_SINGLE,
    containers,
    env_of,
    find,
    helm,
    helm_binary,
    load_yaml,
    merge,
    pod_specs,
    render,
    secret_env,
)

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="no helm binary (set HELM_BIN or put helm on PATH)"
)

WORKLOADS = {
    "Deployment/pg-pictguard-validate-api",
    "Deployment/pg-pictguard-ingest",
    "Deployment/pg-pictguard-classify",
    "Deployment/pg-pictguard-enforce",
    "Job/pg-pictguard-topics",
}


def full_values() -> dict[str, Any]:
    return load_yaml(VALUES_ALL)


@pytest.mark.parametrize(
    ("values", "workloads"),
    [
        (BROKERS, WORKLOADS),
        (full_values(), WORKLOADS),
        ({"mode": "single"}, {"Deployment/pg-pictguard-server"}),
        (load_yaml(VALUES_SINGLE), {"Deployment/pg-pictguard-server"}),
    ],
    ids=["defaults", "every-option", "single", "single-every-option"],
)
def test_every_pod_runs_non_root_read_only_without_capabilities(
    tmp_path: Path, values: dict[str, Any], workloads: set[str]
) -> None:
    specs = pod_specs(render(values, tmp_path))
    assert specs.keys() >= workloads
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The only writable places: /tmp and the state dir.
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert mounts["/var/lib/pictguard"] == "state", name
            assert mounts["/etc/pictguard"] == "config", name
            assert container["args"][:2] == ["--config", "/etc/pictguard/config.yaml"], name
            # Caches (Hugging Face, XDG) point at a writable volume.
            writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
            cache = env_of(container)["XDG_CACHE_HOME"]
            assert any(cache.startswith(path + "/") or cache == path for path in writable), name


def test_long_running_roles_have_probes_and_resources(tmp_path: Path) -> None:
    specs = pod_specs(render(BROKERS, tmp_path))
    for name, spec in specs.items():
        if not name.startswith("Deployment/"):
            continue
        main = spec["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert main[probe]["httpGet"]["path"] in ("/healthz", "/readyz"), (name, probe)
            port = main[probe]["httpGet"]["port"]
            assert port in {p["name"] for p in main["ports"]}, (name, probe)
        assert main["resources"]["requests"]["memory"], name
        assert main["resources"]["limits"]["memory"], name


def test_classify_requests_a_gpu_and_may_run_on_gpu_nodes(tmp_path: Path) -> None:
    spec = pod_specs(render(BROKERS, tmp_path))["Deployment/pg-pictguard-classify"]
    main = spec["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert gpu_taint in spec["tolerations"]
    assert main["image"].endswith("-cuda")
    # CLIP weights live in the Hugging Face cache on a volume, fetched by an init container.
    env = env_of(main)
    assert env["HF_HOME"] == "/var/cache/pictguard/huggingface"
    assert {"name": "model-cache", "mountPath": "/var/cache/pictguard"} in main["volumeMounts"]
    init = spec["initContainers"][0]
    assert init["args"][2:] == ["models", "--download"]
    assert "nvidia.com/gpu" not in init["resources"].get("limits", {})


def test_a_role_can_run_under_its_own_service_account(tmp_path: Path) -> None:
    specs = pod_specs(render(full_values(), tmp_path))
    assert specs["Deployment/pg-pictguard-enforce"]["serviceAccountName"] == "pictguard-enforce"
    assert specs["Deployment/pg-pictguard-classify"]["serviceAccountName"] == "pg-pictguard"
    # The pre-install hook runs before the chart's ServiceAccount exists.
    assert "serviceAccountName" not in specs["Job/pg-pictguard-topics"]


def test_gpu_settings_reach_the_pod(tmp_path: Path) -> None:
    spec = pod_specs(render(full_values(), tmp_path))["Deployment/pg-pictguard-classify"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert (
        volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
        == "pg-pictguard-classify-model-cache"
    )


def test_rendered_config_is_accepted_by_pictguard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(full_values(), tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(find(manifests, "ConfigMap", "pg-pictguard")["data"]["config.yaml"])
    for key, value in secret_env(manifests, "pg-pictguard-enforce").items():
        monkeypatch.setenv(key, value)

    settings = load_settings(config)

    assert settings.kafka.bootstrap_servers == "my-cluster-kafka-bootstrap.kafka:9093"
    assert settings.kafka.sasl_password == "example-password"
    assert str(settings.kafka.ssl_cafile) == "/etc/pictguard-kafka-tls/ca.crt"
    assert settings.s3.secret_access_key == "example-write-secret"
    assert [c.type for c in settings.enforce.notify.channels] == ["matrix", "email"]
    assert settings.storage.backend == "kafka"
    assert settings.api.port == 8080
    assert settings.metrics.port == 9100
    assert str(settings.storage.state_dir) == "/var/lib/pictguard"
    assert settings.enforce.dry_run is True


def test_kafka_tls_files_are_mounted_where_the_config_points(tmp_path: Path) -> None:
    manifests = render(full_values(), tmp_path)
    config = yaml.safe_load(find(manifests, "ConfigMap", "pg-pictguard")["data"]["config.yaml"])
    spec = pod_specs(manifests)["Deployment/pg-pictguard-enforce"]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    paths = {
        f"{mounts['kafka-tls']}/{item['path']}"
        for v in spec["volumes"]
        if v["name"] == "kafka-tls"
        for source in v["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    kafka = config["kafka"]
    assert {kafka["ssl_cafile"], kafka["ssl_certfile"], kafka["ssl_keyfile"]} == paths


def test_topics_are_created_before_install_and_upgrade(tmp_path: Path) -> None:
    manifests = render(BROKERS, tmp_path)
    job = find(manifests, "Job", "pg-pictguard-topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][2:] == ["topics", "create"]
    # Pre-install hooks run before release objects exist: the job brings its own config.
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for kind in ("ConfigMap", "Secret"):
        copy = find(manifests, kind, "pg-pictguard-topics-hook")
        assert copy["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(copy["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "pg-pictguard-topics-hook"


def test_autoscalers_own_the_replica_counts(tmp_path: Path) -> None:
    manifests = render(full_values(), tmp_path)
    assert "replicas" not in find(manifests, "Deployment", "pg-pictguard-validate-api")["spec"]
    assert "replicas" not in find(manifests, "Deployment", "pg-pictguard-classify")["spec"]
    hpa = find(manifests, "HorizontalPodAutoscaler", "pg-pictguard-validate-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pg-pictguard-validate-api"

    scaled = find(manifests, "ScaledObject", "pg-pictguard-classify")
    assert scaled["spec"]["minReplicaCount"] >= 1
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "pictguard-classify"
    assert trigger["metadata"]["topic"] == "pictguard.scan-requests.bulk"
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    auth = find(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"] == ("pg-pictguard-classify", "PICTGUARD_KAFKA__SASL_PASSWORD")


def test_changing_the_config_rolls_the_pods(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        spec = find(render(values, tmp_path), "Deployment", "pg-pictguard-enforce")["spec"]
        return str(spec["template"]["metadata"]["annotations"]["checksum/config"])

    before = checksum(BROKERS)
    assert checksum(merge(BROKERS, {"config": {"enforce": {"dry_run": True}}})) != before
    assert checksum(merge(BROKERS, {"configFiles": {"policy.yaml": "x: 1\n"}})) != before


def test_an_existing_secret_replaces_the_chart_secret(tmp_path: Path) -> None:
    values = merge(full_values(), {"secrets": {"existingSecret": "pictguard-credentials"}})
    values["secrets"] = {"existingSecret": "pictguard-credentials"}
    manifests = render(values, tmp_path)
    assert [d for d in manifests if d["kind"] == "Secret"] == []
    for name, spec in pod_specs(manifests).items():
        for container in containers(spec):
            assert {"secretRef": {"name": "pictguard-credentials"}} in container["envFrom"], name
    auth = find(manifests, "TriggerAuthentication", "pg-pictguard-classify")
    assert {r["name"] for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "password"} == {
        "pictguard-credentials"
    }


def test_backfill_and_reconcile_run_each_bucket_in_turn(tmp_path: Path) -> None:
    manifests = render(full_values(), tmp_path)
    backfill = find(manifests, "CronJob", "pg-pictguard-backfill")
    assert backfill["spec"]["suspend"] is True
    spec = backfill["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [c["args"][2:] for c in containers(spec)] == [
        ["backfill", "s3://pictrs"],
        ["backfill", "s3://mastodon/cache/"],
    ]
    reconcile = find(manifests, "CronJob", "pg-pictguard-reconcile")
    assert reconcile["spec"]["concurrencyPolicy"] == "Forbid"
    spec = reconcile["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "pg-pictguard-reconcile-state"


def test_one_shot_backfill_is_named_by_run_id(tmp_path: Path) -> None:
    values = merge(
        BROKERS, {"backfill": {"enabled": True, "targets": ["s3://pictrs"], "runId": "2024-06"}}
    )
    job = find(render(values, tmp_path), "Job", "pg-pictguard-backfill-2024-06")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})


def test_install_with_default_values_stops_with_a_clear_message(tmp_path: Path) -> None:
    done = helm("template", "pg", values={}, workdir=tmp_path)
    assert done.returncode != 0
    assert "config.kafka.bootstrap_servers is empty" in done.stderr


def test_notes_tell_the_admin_how_to_point_pict_rs_at_the_api(tmp_path: Path) -> None:
    values = merge(
        BROKERS, {"secrets": {"api": {"clients": [{"id": "lemmy", "cidrs": ["10.0.0.0/8"]}]}}}
    )
    done = helm(
        "install", "pg", "--namespace", "mod", "--dry-run=client", values=values, workdir=tmp_path
    )
    if "cluster unreachable" in done.stderr:
        pytest.skip("this helm (3.x) needs a cluster for install --dry-run; helm 4 does not")
    assert done.returncode == 0, done.stderr
    assert (
        "PICTRS__MEDIA__EXTERNAL_VALIDATION="
        "http://pg-pictguard-validate-api.mod.svc.cluster.local:8080/api/v1/scan/lemmy"
    ) in done.stdout


def test_manifests_match_the_kubernetes_api(tmp_path: Path) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    for values in (BROKERS, full_values()):
        for doc in render(values, tmp_path):
            if doc["apiVersion"].split("/")[0] in ("keda.sh", "monitoring.coreos.com"):
                continue  # CRDs: no schema shipped with Kubernetes
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_enforce_keeps_its_state_on_a_volume(tmp_path: Path) -> None:
    """Guard state, held actions and the audit trail survive a pod restart."""
    manifests = render(BROKERS, tmp_path)
    deployment = find(manifests, "Deployment", "pg-pictguard-enforce")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one RWO volume
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "pg-pictguard-enforce-state"
    claim = find(manifests, "PersistentVolumeClaim", "pg-pictguard-enforce-state")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    off = merge(BROKERS, {"enforce": {"persistence": {"enabled": False}}})
    (tmp_path / "off").mkdir()
    volumes = pod_specs(render(off, tmp_path / "off"))["Deployment/pg-pictguard-enforce"]["volumes"]
    assert "emptyDir" in {v["name"]: v for v in volumes}["state"]
