"""Distributed-mode test helpers: role processes on the real broker and S3 server, seeded
buckets, and what the enforce process recorded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from classify.hashlists import HashLists
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.state.topic_table import TopicTable
from tests.corpus import Corpus
from tests.servers import FAST_GROUPS, Broker, S3Server, bucket_keys

PICTGUARD = [sys.executable, "-m", "pictguard.cli"]


def role_env(
    broker: Broker, s3: S3Server, prefix: str, state_dir: Path, **extra: str
) -> dict[str, str]:
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
        # Several replicas of a role on this host: each its own free health port (a role
        # whose port is taken does not start).
        PICTGUARD_METRICS__PORT="0",
        # Enforce on Kafka wants a quarantine location named (not the per-pod default under
        # its state dir); tests that check the copies pass a bucket of their own.
        PICTGUARD_ENFORCE__QUARANTINE=str(state_dir / "quarantine"),
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


def quarantined_keys(client: Any, bucket: str) -> set[str]:
    """The original keys of ``bucket``'s copies in ``<bucket>-q`` (a copy's key there names
    its source: ``s3/<bucket>/<key>``)."""
    source = f"s3/{bucket}/"
    return {k.removeprefix(source) for k in bucket_keys(client, f"{bucket}-q")}


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


def backfill(env: dict[str, str], bucket: str) -> None:
    out = subprocess.run(
        [*PICTGUARD, "backfill", f"s3://{bucket}"], env=env, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()
