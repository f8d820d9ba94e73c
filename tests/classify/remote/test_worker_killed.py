"""Distributed on Kafka: two remote workers classify a bucket for `pictguard run api`; one
is SIGKILLed holding leases. Its requests go to the other: 0 lost, no action twice."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.classify.remote import media
from tests.classify.remote.processes import Processes
from tests.reliability.audit import acted_once, destructive_outcomes, record
from tests.servers import FAST_GROUPS, Broker, S3Server, free_port, wait_until

TOKENS = {"gpu-a": "gpu-a-token-0123456789abcdef", "gpu-b": "gpu-b-token-0123456789abcdef"}
ADMIN = "admin-token-0123456789abcdef"
LEASE_S = 6


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def shared(broker: Broker, s3: S3Server, prefix: str, state: Path) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": broker.bootstrap,
            "topic_prefix": prefix,
            "partitions": 4,
            "group_prefix": f"{prefix}g-",
            "consumer_overrides": FAST_GROUPS,
        },
        "s3": {
            "endpoint_url": s3.endpoint,
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
        },
        "storage": {"state_dir": str(state)},
        "metrics": {"port": 0},
    }


def verdicts_per_object(state: Path) -> dict[str, int]:
    path = state / "pictguard.sqlite3"
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT object_id, COUNT(*) FROM verdicts GROUP BY object_id")
            return dict(rows.fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return {}


def worker_status(url: str) -> dict[str, dict[str, Any]]:
    try:
        body = httpx.get(
            f"{url}/admin/workers", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
        ).json()
    except httpx.HTTPError:
        return {}
    return {w["id"]: w for w in body["workers"]}


def test_a_worker_killed_mid_lease_loses_nothing_and_nothing_is_acted_on_twice(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    procs: Processes,
) -> None:
    client: Any = s3_server.client()
    objects = {f"media/{i:02x}/photo-{i}.jpg": media.clean(i, 480, 360) for i in range(40)}
    flagged = {
        f"media/ff/poster-{i}.jpg": media.washed(i, media.MAGENTA, 480, 360) for i in range(5)
    }
    objects.update(flagged)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    client.create_bucket(Bucket=f"{bucket}-q")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = shared(broker, s3_server, topic_prefix, tmp_path / "api")
    api["classify"] = {
        "classifiers": ["hashlist"],
        "remote": {
            "enabled": True,
            "workers": [{"id": w, "token": t} for w, t in TOKENS.items()],
            "lease_s": LEASE_S,
        },
    }
    api["api"] = {"host": "127.0.0.1", "port": port}
    api["enforce"] = {"admin_token": ADMIN}
    procs.start("api", ["run", "api"], api)
    enforce = shared(broker, s3_server, topic_prefix, tmp_path / "enforce")
    enforce["enforce"] = {"quarantine": f"s3://{bucket}-q/"}
    procs.start("enforce", ["run", "enforce"], enforce)
    wait_until(lambda: worker_status(url) or not procs.alive(), 90, "the API")
    assert procs.alive(), procs.logs()

    def worker(name: str, **env: str) -> dict[str, Any]:
        # A worker's whole configuration: its models and its token. No Kafka, no S3.
        config = {
            "metrics": {"port": 0},
            "storage": {"state_dir": str(tmp_path / name)},
            "classify": {
                "classifiers": ["hashlist", "colour"],
                "max_batch": 4,
                "worker": {"token": TOKENS[name], "pullers": 2},
            },
        }
        procs.start(name, ["run", "classify", "--remote", url], config, **env)
        return config

    # Worker A's model hangs: it leases two batches and stalls on them.
    worker("gpu-a", PICTGUARD_TEST_HANG="1")
    backfill = shared(broker, s3_server, topic_prefix, tmp_path / "backfill")
    lister = procs.start("backfill", ["backfill", f"s3://{bucket}"], backfill)
    assert lister.wait(120) == 0, procs.log("backfill")
    wait_until(
        lambda: worker_status(url).get("gpu-a", {}).get("leases", 0) > 0, 60, "A to hold leases"
    )
    held = worker_status(url)["gpu-a"]["leases"]
    procs.procs["gpu-a"].send_signal(signal.SIGKILL)
    procs.procs["gpu-a"].wait(10)
    del procs.procs["gpu-a"]  # killed on purpose

    worker("gpu-b")
    wait_until(
        lambda: (
            len(verdicts_per_object(tmp_path / "enforce")) == len(objects)
            and len(destructive_outcomes(tmp_path / "enforce")) == len(flagged)
        ),
        180,
        "every object's verdict and the flagged objects' quarantine",
    )
    metrics_text = httpx.get(f"{url}/metrics", timeout=5).text
    procs.stop_all()

    expected = {f"s3://{bucket}/{k}" for k in flagged}
    assert acted_once(destructive_outcomes(tmp_path / "enforce"), expected) == []
    quarantined = client.list_objects_v2(Bucket=f"{bucket}-q").get("Contents", [])
    # A copy's key names its source bucket: s3/<bucket>/<key>.
    assert {o["Key"].removeprefix(f"s3/{bucket}/") for o in quarantined} == set(flagged)
    seen = verdicts_per_object(tmp_path / "enforce")
    assert set(seen) == {f"s3://{bucket}/{k}" for k in objects}  # 0 lost
    expiries = [
        line
        for line in metrics_text.splitlines()
        if line.startswith('pictguard_remote_lease_expiries_total{worker="gpu-a"}')
    ]
    assert expiries and float(expiries[0].split()[-1]) >= held  # each went to B
    assert 'pictguard_remote_results_total{outcome="accepted",worker="gpu-a"}' not in metrics_text
    record(
        "remote_worker_killed",
        objects=len(objects),
        leases_held_at_kill=held,
        lost=len(objects) - len(seen),
        repeated_verdicts=sum(seen.values()) - len(seen),
    )
