"""Distributed mode: each role its own process on a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.bus.kafka import KafkaBus
from tests.corpus import make_corpus
from tests.kafka_roles import (
    PICTGUARD,
    Roles,
    backfill,
    outcomes,
    quarantined_keys,
    role_env,
    seed_bucket,
    wait_for,
)
from tests.media import photo_jpeg
from tests.servers import Broker, S3Server, bucket_keys


def test_two_classify_consumers_over_kafka(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(500, blocked=10, corrupt=6, non_images=6)
    quarantine = seed_bucket(s3_server, bucket, corpus, broker, topic_prefix)
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
    )
    for role in ("classify", "classify", "enforce"):
        roles.start(role, {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / role)})
    backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)

    seen = wait_for(tmp_path / "enforce", len(corpus.objects), acted=len(corpus.blocked))

    assert seen["objects"] == len(corpus.objects)
    assert seen["decisions"] == {
        "allow": len(corpus.clean),
        "flag_csam": len(corpus.blocked),
        "error": len(corpus.corrupt) + len(corpus.non_images),
    }
    assert set(seen["destructive"]) == {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert set(seen["destructive"].values()) == {1}
    assert bucket_keys(client, bucket) == set(corpus.objects) - corpus.blocked
    assert quarantined_keys(client, bucket) == corpus.blocked
    assert all(p.poll() is None for p in roles.procs)  # nothing crashed


def test_classify_killed_mid_run_loses_nothing_and_acts_once(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(300, blocked=10, corrupt=3, non_images=3)
    quarantine = seed_bucket(s3_server, bucket, corpus, broker, topic_prefix)
    # NudeNet makes each image cost real model time, so the kill lands mid-stream.
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist", "nudenet"]',
        PICTGUARD_CLASSIFY__CONCURRENCY="4",
        PICTGUARD_CLASSIFY__FETCH_BATCH="8",
    )
    enforce_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "enforce")}
    classify_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "classify")}
    roles.start("enforce", enforce_env)
    victim = roles.start("classify", classify_env)
    roles.start("classify", classify_env)
    backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)

    wait_for(tmp_path / "enforce", 20)
    victim.send_signal(signal.SIGKILL)
    assert outcomes(tmp_path / "enforce")["objects"] < len(corpus.objects)  # killed mid-run
    victim.wait(10)
    roles.start("classify", classify_env)

    seen = wait_for(
        tmp_path / "enforce", len(corpus.objects), timeout=240, acted=len(corpus.blocked)
    )
    assert seen["objects"] == len(corpus.objects)
    assert set(seen["destructive"]) == {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert set(seen["destructive"].values()) == {1}  # nobody acted on an object twice
    assert quarantined_keys(client, bucket) == corpus.blocked


async def read_keys(broker: Broker, topic: str) -> list[str]:
    bus = KafkaBus(broker.settings())
    await bus.start()
    consumer = bus.consumer([topic], None)
    await consumer.start()
    keys: list[str] = []
    try:
        for _ in range(10):
            batch = await consumer.getmany(500, 1000)
            keys += [m.key.decode() for m in batch if m.key]
            if not batch and keys:
                break
    finally:
        await consumer.stop()
        await bus.stop()
    return keys


def test_backfill_flags_and_reconcile_commands(
    broker: Broker, s3_server: S3Server, bucket: str, topic_prefix: str, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    for folder in ("a", "b"):
        for i in range(10):
            client.put_object(Bucket=bucket, Key=f"{folder}/{i}.png", Body=b"x")
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_STORAGE__BACKEND="kafka",
        PICTGUARD_INGEST__RECONCILE__MIN_AGE_S="0",
    )
    out = subprocess.run(
        [
            *PICTGUARD,
            "backfill",
            f"s3://{bucket}",
            "--prefix",
            "a/",
            "--since",
            "1h",
            "--rate-limit",
            "1000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "published 10 scan requests" in out.stdout
    topic = f"{topic_prefix}scan-requests.bulk"
    keys = asyncio.run(read_keys(broker, topic))
    assert sorted(keys) == sorted(f"s3://{bucket}/a/{i}.png" for i in range(10))

    # Nothing has a verdict yet (no classify runs here): reconcile enqueues every object.
    out = subprocess.run(
        [*PICTGUARD, "reconcile", f"s3://{bucket}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "20 objects without a verdict enqueued" in out.stdout
    keys = asyncio.run(read_keys(broker, topic))
    assert len(keys) == 30 and len(set(keys)) == 20


@pytest.mark.parametrize("role", ["classify", "enforce", "api"])
def test_sigterm_stops_a_role_cleanly(
    broker: Broker, s3_server: S3Server, topic_prefix: str, tmp_path: Path, role: str
) -> None:
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path,
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_API__PORT="0",
        PICTGUARD_API__HOST="127.0.0.1",
    )
    log = tmp_path / "role.log"
    proc = subprocess.Popen(
        [*PICTGUARD, "run", role], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while "running on Kafka" not in log.read_text() and "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        # Finishing in-flight work and leaving the group takes seconds, not a kill -9.
        assert proc.wait(30) == 0, log.read_text()
        assert "Unclosed" not in log.read_text() and "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cron_reconcile_after_a_backfill_sees_every_verdict(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    """Enforce keeps the verdict ledger on Kafka whatever ingest does: a reconcile from cron
    right after a full backfill finds every object scanned (ingest.reconcile is off)."""
    client: Any = s3_server.client()
    photos = {f"media/{i:02x}/photo-{i:03d}.jpg": photo_jpeg(5000 + i, 320, 240) for i in range(50)}
    for key, data in photos.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    env = role_env(broker, s3_server, topic_prefix, tmp_path / "state")
    for role in ("classify", "enforce"):
        roles.start(role, {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / role)})
    backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)
    wait_for(tmp_path / "enforce", len(photos))

    cron = {
        **env,
        "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "cron"),
        "PICTGUARD_STORAGE__BACKEND": "kafka",
        "PICTGUARD_INGEST__RECONCILE__MIN_AGE_S": "0",
    }
    out = subprocess.run(
        [*PICTGUARD, "reconcile", f"s3://{bucket}"],
        env=cron,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "0 objects without a verdict enqueued" in out.stdout, out.stdout + out.stderr
    assert "50 already scanned, 0 enqueued" in out.stderr
