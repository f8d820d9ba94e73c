"""Soak: the Kafka pipeline at a steady, bounded rate for minutes; memory and lag sampled.

Starts a Tansu broker and a moto S3 server on loopback and the four roles as their own
processes (ingest reading MinIO-style notifications from ``bucket-events``, classify,
enforce, and the validate API). Then, for ``--minutes``, it uploads a new generated image
``--rate`` times a second and publishes its MinIO notification (1 in 100 is on the
blocklist and gets quarantined), and posts an upload to the API ``--api-rate`` times a
second. Every ``--sample-s`` seconds it records each role's RSS, each consumer group's lag
(end offsets minus committed offsets, asked of the broker) and the end-to-end backlog
(notifications published minus objects with a verdict in enforce's state).

At the end it lets the pipeline drain and checks: every object has a verdict (0 lost), each
blocklisted object was quarantined once, no role died, RSS shows no upward trend after
the warm-up, and the lag stayed bounded. Prints a table and a summary; ``--json FILE``
writes both. Exit status 1 when a check fails. Not part of ``make test``.

The trend is the drift: RSS growth after the warm-up (by default a third of the run, at
least two minutes) per 10 minutes, not counting steps, i.e. jumps of more than 2 MB
within one sample interval. A leak raises every interval a little; a step is a one-time
allocation (onnxruntime growing its arena the first time a larger batch comes, Python's
allocator adding a pool). Steps are reported apart and may add up to 32 MB after the
warm-up; the plain least-squares slope, which a step moves, is printed beside the drift.

    python bench/soak.py [--minutes 10] [--rate 5] [--api-rate 1] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from classify.hashlists import HashLists
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.samples import image_bytes
from pipeline.settings import KafkaSettings
from pipeline.state.topic_table import TopicTable
from tests.ingest.payloads import minio_event, minio_kafka_key
from tests.servers import (
    FAST_GROUPS,
    end_offsets,
    free_port,
    poll_ready,
    start_broker,
    start_s3,
    topic_partitions,
)

BUCKET = "soak-media"
PREFIX = "soak."
ROLES = ("ingest", "classify", "enforce", "api")
# Consumer groups and the topic each one reads.
GROUPS = {
    "pictguard-ingest-events": f"{PREFIX}bucket-events",
    "pictguard-classify": f"{PREFIX}scan-requests.bulk",
    "pictguard-classify-sync": f"{PREFIX}scan-requests.sync",
    "pictguard-enforce": f"{PREFIX}verdicts",
}
# RSS may drift by at most this much per 10 minutes after the warm-up (the in-memory
# verdict-cache table gains an entry per new image, ~1 KB), one-time steps may add up to
# MAX_RSS_STEPS_MB, and lag may never exceed this many seconds of input.
MAX_RSS_DRIFT_MB_PER_10MIN = 5.0
STEP_MB = 2.0
MAX_RSS_STEPS_MB = 32.0
MAX_LAG_SECONDS_OF_INPUT = 30.0


@dataclass
class Sample:
    t: float
    published: int
    verdicts: int
    rss_mb: dict[str, float]
    lag: dict[str, int]
    api_ok: int
    api_failed: int


@dataclass
class Load:
    """What the load generator has done so far (shared with the sampler)."""

    published: int = 0
    blocked: list[str] = field(default_factory=list)
    api_ok: int = 0
    api_failed: int = 0
    api_latency_ms: list[float] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def verdict_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT COUNT(DISTINCT object_id) FROM verdicts WHERE object_id IS NOT NULL"
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def quarantined_once(db: Path, blocked: list[str]) -> tuple[int, int]:
    """(objects quarantined exactly once, objects acted on more than once)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT object_id, COUNT(*) FROM actions WHERE action = 'quarantine' "
            "AND outcome = 'done' GROUP BY object_id"
        ).fetchall()
    finally:
        conn.close()
    done = dict(rows)
    ids = {f"s3://{BUCKET}/{key}" for key in blocked}
    return sum(1 for i in ids if done.get(i) == 1), sum(1 for n in done.values() if n > 1)


async def group_lags(bootstrap: str) -> dict[str, int]:
    """End offset minus committed offset, summed over partitions, per consumer group.

    End offsets are the true ones (tests.servers.end_offsets): Tansu under-reports them when
    records arrive in batches, which would hide lag.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, int] = {}
        for group, topic in GROUPS.items():
            parts = await topic_partitions(consumer, topic)
            ends = await end_offsets(consumer, parts)
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
            out[group] = sum(
                max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in parts
            )
        return out
    finally:
        await consumer.stop()
        await admin.close()


def drift_and_steps(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(growth per 10 minutes without the steps, growth in steps) of (seconds, MB) samples."""
    if len(points) < 2:
        return 0.0, 0.0
    rises = [v2 - v1 for (_, v1), (_, v2) in itertools.pairwise(points)]
    steps = sum(r for r in rises if r > STEP_MB)
    span = points[-1][0] - points[0][0]
    return (sum(rises) - steps) / span * 600, steps


def slope_mb_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), scaled to MB per 10 minutes."""
    n = len(points)
    if n < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return (cov / var) * 600 if var else 0.0


async def block(bootstrap: str, sha256s: list[str]) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=PREFIX, partitions=4)
    bus = KafkaBus(kafka)
    await bus.start()
    table = TopicTable(bus, f"{PREFIX}hashlists")
    lists = HashLists(table)
    await lists.start()
    for sha in sha256s:
        await lists.add(sha256=sha, list="block", reason="soak", author="soak")
    await table.stop()
    await bus.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="new objects per second")
    parser.add_argument("--api-rate", type=float, default=1.0, help="API uploads per second")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, help="default: a third of the run, ≥ 120 s")
    parser.add_argument("--classifiers", default="hashlist,nudenet")
    parser.add_argument("--json", type=Path, help="write samples and summary here")
    args = parser.parse_args()

    import boto3
    import httpx
    from aiokafka import AIOKafkaProducer

    broker, s3 = start_broker(), start_s3()
    work = Path(tempfile.mkdtemp(prefix="pictguard-soak-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    client: Any = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=f"{BUCKET}-q")
    duration = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else max(120.0, duration / 3)
    n_objects = int(duration * args.rate)
    blocked_seeds = set(range(50, n_objects, 100))
    asyncio.run(create_topics(broker.settings(topic_prefix=PREFIX, partitions=4)))
    asyncio.run(
        block(
            broker.bootstrap,
            [hashlib.sha256(image_bytes(s, "PNG", 96)).hexdigest() for s in blocked_seeds],
        )
    )
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=PREFIX,
        PICTGUARD_KAFKA__PARTITIONS="4",
        PICTGUARD_KAFKA__CONSUMER_OVERRIDES=json.dumps(FAST_GROUPS),
        PICTGUARD_S3__ENDPOINT_URL=s3.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID="testing",
        PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
        PICTGUARD_CLASSIFY__CLASSIFIERS=json.dumps(args.classifiers.split(",")),
        PICTGUARD_ENFORCE__QUARANTINE=f"s3://{BUCKET}-q/",
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(api_port),
        PICTGUARD_API__CLIENTS='[{"id": "soak", "cidrs": ["127.0.0.0/8"]}]',
        PICTGUARD_LOG__LEVEL="WARNING",
        PICTGUARD_METRICS__PORT="0",
    )
    py = [sys.executable, "-m", "pictguard.cli"]
    for role in ROLES:
        role_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(work / role)}
        log = (work / f"{role}.log").open("wb")
        procs[role] = subprocess.Popen(
            [*py, "run", role], env=role_env, stdout=log, stderr=subprocess.STDOUT
        )
    api = f"http://127.0.0.1:{api_port}/api/v1/scan/soak"
    poll_ready(f"http://127.0.0.1:{api_port}", timeout=60)
    time.sleep(3)  # consumer groups settle

    load = Load()
    stop = threading.Event()
    db = work / "enforce" / "pictguard.sqlite3"

    async def produce_events() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        started = time.monotonic()
        try:
            for i in range(n_objects):
                due = started + i / args.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if stop.is_set():
                    break
                key = f"{i % 97:02x}/{i % 89:02x}/soak-{i:07d}.png"
                data = image_bytes(i, "PNG", 96)
                await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key=key, Body=data)
                etag = hashlib.md5(data).hexdigest()  # the eTag S3 would send
                await producer.send_and_wait(
                    f"{PREFIX}bucket-events",
                    minio_event(BUCKET, key, size=len(data), etag=etag, sequencer=f"{i:016X}"),
                    key=minio_kafka_key(BUCKET, key),
                )
                load.published += 1
                if i in blocked_seeds:
                    load.blocked.append(key)
        finally:
            await producer.stop()

    def call_api() -> None:
        started = time.monotonic()
        i = 0
        with httpx.Client(timeout=30) as http:
            while not stop.is_set() and time.monotonic() - started < duration:
                due = started + i / args.api_rate
                time.sleep(max(0.0, due - time.monotonic()))
                t0 = time.perf_counter()
                try:
                    ok = http.post(api, content=image_bytes(10_000_000 + i, "PNG", 64))
                    good = ok.status_code == 200
                except httpx.HTTPError:
                    good = False
                load.api_latency_ms.append((time.perf_counter() - t0) * 1000)
                if good:
                    load.api_ok += 1
                else:
                    load.api_failed += 1
                i += 1

    producer_thread = threading.Thread(target=lambda: asyncio.run(produce_events()))
    api_thread = threading.Thread(target=call_api)
    samples: list[Sample] = []
    t_start = time.monotonic()
    producer_thread.start()
    if args.api_rate > 0:
        api_thread.start()
    print(f"soak: {args.minutes:g} min at {args.rate:g} objects/s, {args.api_rate:g} API req/s")
    header = (
        f"{'t (s)':>6} {'published':>9} {'verdicts':>8} {'backlog':>7} "
        + " ".join(f"{r + ' MB':>11}" for r in ROLES)
        + " "
        + " ".join(f"{g.removeprefix('pictguard-'):>15}" for g in GROUPS)
    )
    print(header)
    try:
        while producer_thread.is_alive() or api_thread.is_alive():
            time.sleep(max(0.0, t_start + (len(samples) + 1) * args.sample_s - time.monotonic()))
            dead = [r for r, p in procs.items() if p.poll() is not None]
            if dead:
                raise SystemExit(f"roles died: {dead} (logs in {work})")
            sample = Sample(
                t=round(time.monotonic() - t_start, 1),
                published=load.published,
                verdicts=verdict_count(db),
                rss_mb={r: round(rss_mb(p.pid), 2) for r, p in procs.items()},
                lag=asyncio.run(group_lags(broker.bootstrap)),
                api_ok=load.api_ok,
                api_failed=load.api_failed,
            )
            samples.append(sample)
            print(
                f"{sample.t:>6.0f} {sample.published:>9} {sample.verdicts:>8} "
                f"{sample.published - sample.verdicts:>7} "
                + " ".join(f"{sample.rss_mb[r]:>11.1f}" for r in ROLES)
                + " "
                + " ".join(f"{sample.lag[g]:>15}" for g in GROUPS),
                flush=True,
            )
        # Drain: everything published gets its verdict.
        drain_started = time.monotonic()
        while verdict_count(db) < load.published and time.monotonic() - drain_started < 120:
            time.sleep(1)
        drain_s = time.monotonic() - drain_started
    finally:
        stop.set()
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        s3.stop()

    verdicts = verdict_count(db)
    once, twice = quarantined_once(db, load.blocked)
    steady = [s for s in samples if s.t >= warmup]
    rss = {r: [(s.t, s.rss_mb[r]) for s in steady] for r in ROLES}
    slopes = {r: round(slope_mb_per_10min(rss[r]), 2) for r in ROLES}
    drifts = {r: round(drift_and_steps(rss[r])[0], 2) for r in ROLES}
    steps = {r: round(drift_and_steps(rss[r])[1], 1) for r in ROLES}
    max_lag = {g: max(s.lag[g] for s in samples) for g in GROUPS}
    max_backlog = max(s.published - s.verdicts for s in samples)
    lag_bound = int(MAX_LAG_SECONDS_OF_INPUT * args.rate)
    latencies = sorted(load.api_latency_ms) or [0.0]
    summary = {
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "api_rate_per_s": args.api_rate,
        "classifiers": args.classifiers,
        "published": load.published,
        "verdicts": verdicts,
        "lost": load.published - verdicts,
        "drain_s": round(drain_s, 1),
        "blocked": len(load.blocked),
        "quarantined_once": once,
        "acted_twice": twice,
        "api_ok": load.api_ok,
        "api_failed": load.api_failed,
        "api_p50_ms": round(latencies[len(latencies) // 2], 1),
        "api_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
        "rss_first_mb": samples[0].rss_mb if samples else {},
        "rss_last_mb": samples[-1].rss_mb if samples else {},
        "warmup_s": warmup,
        "rss_drift_mb_per_10min_after_warmup": drifts,
        "rss_steps_mb_after_warmup": steps,
        "rss_slope_mb_per_10min_after_warmup": slopes,
        "max_lag": max_lag,
        "max_backlog": max_backlog,
        "lag_bound": lag_bound,
    }
    failures = []
    if summary["lost"]:
        failures.append(f"{summary['lost']} objects without a verdict")
    if once != len(load.blocked) or twice:
        failures.append(f"quarantined once {once} of {len(load.blocked)}, twice {twice}")
    failures += [
        f"{r} RSS drifts {v} MB/10 min" for r, v in drifts.items() if v > MAX_RSS_DRIFT_MB_PER_10MIN
    ]
    failures += [f"{r} RSS steps {v} MB" for r, v in steps.items() if v > MAX_RSS_STEPS_MB]
    if max(max_lag.values()) > lag_bound or max_backlog > lag_bound:
        failures.append(f"lag above {lag_bound} messages")
    summary["failures"] = failures
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "samples": [s.__dict__ for s in samples]}, indent=2)
        )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
