"""Distributed mode: each role its own process on a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from classify.hashlists import HashLists
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.state.topic_table import TopicTable
from tests.corpus import Corpus, make_corpus
from tests.servers import FAST_GROUPS, Broker, S3Server

PICTGUARD = [sys.executable, "-m", "pictguard.cli"]


def role_env(
    broker: Broker, s3: S3Server, prefix: str, state_dir: Path, **extra: str
) -> dict[str, str]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=prefix,
        PICTGUARD_KAFKA__PARTITIONS="4",
        # Consumer groups of this test's own: a member another test killed or paused must
        # not hold up this test's group joins (the broker waits for it to rejoin).
        PICTGUARD_KAFKA__GROUP_PREFIX=f"{prefix}g-",
        PICTGUARD_KAFKA__CONSUMER_OVERRIDES=json.dumps(FAST_GROUPS),
        PICTGUARD_S3__ENDPOINT_URL=s3.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID="testing",
        PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
        PICTGUARD_STORAGE__STATE_DIR=str(state_dir),
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist"]',
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Roles:
    """Starts role processes and makes sure none outlives the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{role}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*PICTGUARD, "run", role], env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    r = Roles(tmp_path)
    yield r
    r.stop_all()


async def block_on_kafka(broker: Broker, prefix: str, corpus: Corpus) -> None:
    settings = broker.settings(topic_prefix=prefix, partitions=4)
    await create_topics(settings)
    bus = KafkaBus(settings)
    await bus.start()
    table = TopicTable(bus, f"{prefix}hashlists")
    lists = HashLists(table)
    await lists.start()
    for key in corpus.blocked:
        await lists.add(sha256=corpus.sha256(key), list="block", reason="test", author="t")
    await table.stop()
    await bus.stop()


def seed_bucket(
    s3: S3Server, bucket: str, corpus: Corpus, broker: Broker | None = None, prefix: str = ""
) -> str:
    """Upload ``corpus`` into ``bucket`` and create its quarantine bucket; given a broker,
    also blocklist the corpus's blocked images on that broker's hashlists topic (under
    ``prefix``). Returns the quarantine location for PICTGUARD_ENFORCE__QUARANTINE."""
    client: Any = s3.client()
    corpus.upload(client, bucket)
    client.create_bucket(Bucket=f"{bucket}-q")
    if broker is not None:
        asyncio.run(block_on_kafka(broker, prefix, corpus))
    return f"s3://{bucket}-q/"


def outcomes(state_dir: Path) -> dict[str, Any]:
    """What the enforce process recorded: verdicts per object, destructive actions per object."""
    path = state_dir / "pictguard.sqlite3"
    if not path.exists():
        return {"objects": 0, "destructive": {}}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        objects = conn.execute("SELECT COUNT(DISTINCT object_id) FROM verdicts").fetchone()[0]
        rows = conn.execute(
            "SELECT object_id, COUNT(*) FROM actions WHERE action IN ('delete', 'quarantine') "
            "AND outcome = 'done' GROUP BY object_id"
        ).fetchall()
        decisions = dict(
            conn.execute(
                "SELECT decision, COUNT(DISTINCT object_id) FROM verdicts GROUP BY decision"
            ).fetchall()
        )
    except sqlite3.OperationalError:
        return {"objects": 0, "destructive": {}}
    finally:
        conn.close()
    return {"objects": objects, "destructive": dict(rows), "decisions": decisions}


def wait_for(state_dir: Path, n: int, timeout: float = 120, *, acted: int = 0) -> dict[str, Any]:
    """Wait until ``n`` objects have a verdict and ``acted`` objects a finished destructive
    action (enforce records a verdict before it acts, so the last action may still run)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = outcomes(state_dir)
        if seen["objects"] >= n and len(seen["destructive"]) >= acted:
            return seen
        time.sleep(0.3)
    raise AssertionError(
        f"only {seen.get('objects')} of {n} objects got a verdict and "
        f"{len(seen.get('destructive', {}))} of {acted} were acted on: {seen}"
    )


def bucket_keys(client: Any, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def backfill(env: dict[str, str], bucket: str) -> None:
    out = subprocess.run(
        [*PICTGUARD, "backfill", f"s3://{bucket}"], env=env, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()


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
    assert bucket_keys(client, f"{bucket}-q") == corpus.blocked
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
    assert bucket_keys(client, f"{bucket}-q") == corpus.blocked


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
