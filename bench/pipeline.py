"""Benchmark: objects/s of the Kafka pipeline against the raw GET limit of the same store.

Starts a Tansu broker and a moto S3 server on loopback, uploads N generated images, then in
one run measures:

1. raw: a plain concurrent GET loop over the same objects (aiobotocore, same concurrency);
2. pipeline: backfill → Kafka → classify (hash lists: sha256, decode, PDQ) → Kafka →
   enforce, until every object has its final outcome.

and prints both rates and their ratio (target ≥ 0.8). moto is pure Python, so absolute
numbers say more about moto than about pictguard; the ratio is the figure that matters.
Model throughput is measured by bench/classify.py.

    python bench/pipeline.py [--objects 2000] [--concurrency 32] [--classify-procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.bus.kafka import create_topics
from pipeline.samples import image_bytes
from pipeline.settings import S3Settings
from pipeline.storage.locations import Stores
from tests.servers import FAST_GROUPS, start_broker, start_s3

BUCKET = "bench-media"


def upload(client: Any, n: int) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"{i % 97:02x}/{i % 89:02x}/img-{i:06d}.png" for i in range(n)]
    blobs = {k: image_bytes(i, "PNG", 96) for i, k in enumerate(keys)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=blobs[k]), keys))
    return keys


async def raw_get_loop(s3: S3Settings, keys: list[str], concurrency: int) -> float:
    stores = Stores(s3)
    store = stores.open("s3", BUCKET)  # type: ignore[arg-type]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)

    async def worker() -> None:
        while not queue.empty():
            await store.get(queue.get_nowait(), 50 * 1024 * 1024)

    await store.head(keys[0])  # open the connection pool outside the timing
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await stores.close()
    return len(keys) / elapsed


def outcomes(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(DISTINCT object_id) FROM verdicts").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--classify-procs", type=int, default=1)
    args = parser.parse_args()

    broker, s3 = start_broker(), start_s3()
    work = Path(tempfile.mkdtemp(prefix="pictguard-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client: Any = s3.client()
        client.create_bucket(Bucket=BUCKET)
        keys = upload(client, args.objects)
        s3_settings = S3Settings(
            endpoint_url=s3.endpoint,
            access_key_id="testing",
            secret_access_key="testing",
            max_pool_connections=args.concurrency,
        )
        raw = asyncio.run(raw_get_loop(s3_settings, keys, args.concurrency))

        prefix = "bench."
        asyncio.run(create_topics(broker.settings(topic_prefix=prefix, partitions=8)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
        env.update(
            PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
            PICTGUARD_KAFKA__TOPIC_PREFIX=prefix,
            PICTGUARD_KAFKA__CONSUMER_OVERRIDES=json.dumps(FAST_GROUPS),
            PICTGUARD_S3__ENDPOINT_URL=s3.endpoint,
            PICTGUARD_S3__ACCESS_KEY_ID="testing",
            PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
            PICTGUARD_S3__MAX_POOL_CONNECTIONS=str(args.concurrency),
            PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist"]',
            PICTGUARD_CLASSIFY__CONCURRENCY=str(args.concurrency),
            PICTGUARD_CLASSIFY__FETCH_BATCH="256",
            PICTGUARD_LOG__LEVEL="WARNING",
            PICTGUARD_METRICS__PORT="0",  # several roles on one host: any free port
            # Nothing here is flagged; enforce on Kafka needs a shared quarantine location to
            # start a live run, and a dry run needs none.
            PICTGUARD_ENFORCE__DRY_RUN="true",
        )
        py = [sys.executable, "-m", "pictguard.cli"]
        for role, n in (("classify", args.classify_procs), ("enforce", 1)):
            for i in range(n):
                role_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(work / f"{role}{i}")}
                procs.append(subprocess.Popen([*py, "run", role], env=role_env))
        time.sleep(4)  # let the roles join their groups before the clock starts
        started = time.perf_counter()
        subprocess.run(
            [*py, "backfill", f"s3://{BUCKET}"],
            check=True,
            capture_output=True,
            env={**env, "PICTGUARD_STORAGE__STATE_DIR": str(work / "backfill")},
        )
        db = work / "enforce0" / "pictguard.sqlite3"
        while outcomes(db) < len(keys):
            if time.perf_counter() - started > 600:
                raise SystemExit(f"timed out with {outcomes(db)} of {len(keys)} outcomes")
            time.sleep(0.05)
        pipeline = len(keys) / (time.perf_counter() - started)
        cpu = {f"{p.args[-1]}[{p.pid}]": cpu_seconds(p.pid) for p in procs}
        print(f"objects:                 {len(keys)} (96-px PNG, moto S3, Tansu Kafka)")
        print(f"raw concurrent GET loop: {raw:8.1f} objects/s (concurrency {args.concurrency})")
        print(
            f"kafka pipeline:          {pipeline:8.1f} objects/s "
            f"(backfill → {args.classify_procs} classify → enforce, end to end)"
        )
        print(f"ratio:                   {pipeline / raw:8.2f} (target ≥ 0.8)")
        print("cpu seconds per role:    " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        broker.stop()
        s3.stop()


if __name__ == "__main__":
    main()
