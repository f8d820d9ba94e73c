"""Benchmark: latency and throughput of synchronous validation, and the API's own overhead.

For each mode (``pictguard serve`` in one process; two processes — ``run api`` and
``run classify`` — over a Tansu Kafka broker) and each concurrency (1, 16, 64), unique
generated images are POSTed exactly as pict-rs does (raw body, its Content-Type). A tiny
random-weight open_clip model classifies them, so every request is a real model run (no
cache hits). Printed per run:

- end-to-end latency p50/p95/p99 and requests/s;
- the model's own time for each image (the engine's ``timings_ms.total`` in the verdict:
  decode, batching and the model call), and the overhead = end-to-end minus that, per
  request, as p50/p95/p99. Target at concurrency 16: overhead p50 ≤ 10 ms, p99 ≤ 50 ms;
- ``http``: end-to-end minus the server's own handling (``elapsed_ms``), i.e. HTTP parsing,
  the response and the load generator's share of the two cores.

Over Kafka each concurrency gets a fresh broker and processes: Tansu's memory storage does
more work per request as its log grows (a single producer and consumer slow from ~260 to
~12 round trips/s within 5,000 records), which is the test broker's cost, not pictguard's.
Before those runs the bench measures the broker's own floor: one record produced and
fetched by a bare client at the same fetch wait; an upload makes that trip twice.

    python bench/validate.py [--requests 200] [--modes single,kafka] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.samples import image_bytes
from tests.servers import Broker, free_port, start_broker
from tests.validate.conftest import (
    CLIENT,
    Stack,
    base_config,
    kafka_config,
    start,
    wait_ready,
    warm_up,
)

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


FETCH_WAIT_MS = 5


def with_tiny_clip(config: dict[str, Any], tmp: Path) -> dict[str, Any]:
    path = tmp / "pg-bench-tiny.json"  # open_clip names the model after the file
    path.write_text(json.dumps(TINY_CLIP))
    config["classify"] = {
        "classifiers": ["hashlist", "clip"],
        "max_wait_ms": 2,
        "clip": {
            "model": "pg-bench-tiny",
            "pretrained": None,
            "model_config_path": str(path),
            "allow_random_weights": True,
            "device": "cpu",
        },
    }
    # Tansu does not answer a fetch as soon as records arrive (Apache Kafka and Redpanda
    # do), so the 10 ms default would be broker latency, not pictguard's. Much shorter
    # costs more than it saves: each idle 2 ms poll loop burns ~13 % of a core in the broker
    # and as much again in the client, on a machine the load shares.
    config.setdefault("kafka", {})["low_latency_fetch_wait_ms"] = FETCH_WAIT_MS
    config["api"]["deadline_s"] = 9
    config["api"]["max_inflight"] = 1024
    config["log"] = {"level": "WARNING"}
    return config


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, images: list[bytes], concurrency: int) -> dict[str, Any]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in images:
        queue.put_nowait(data)
    e2e: list[float] = []
    model: list[float] = []
    overhead: list[float] = []
    http: list[float] = []
    paths: dict[str, int] = {}
    # aiohttp, not httpx: httpx's client costs ~1 ms of CPU per request (it tops out near 500
    # requests/s at concurrency 16 and 250 at 64 on this machine), and the load generator
    # shares the two cores with the server. pict-rs's own client (reqwest) is lighter still.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                data = queue.get_nowait()
                started = time.perf_counter()
                async with client.post(
                    f"{url}/api/v1/scan/{CLIENT}",
                    data=data,
                    headers={"Content-Type": "image/png", "User-Agent": "pict-rs v0.5.16"},
                ) as response:
                    body = await response.json(content_type=None)
                took = (time.perf_counter() - started) * 1000
                paths[body.get("path", "?")] = paths.get(body.get("path", "?"), 0) + 1
                engine_ms = float(body.get("timings_ms", {}).get("total", 0.0))
                e2e.append(took)
                model.append(engine_ms)
                overhead.append(took - engine_ms)
                http.append(took - float(body.get("elapsed_ms", 0.0)))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(images) / elapsed,
        "e2e": e2e,
        "model": model,
        "overhead": overhead,
        "http": http,
        "paths": paths,
    }


def trio(values: list[float], width: int = 6) -> str:
    """p50/p95/p99 of ``values``."""
    return "/".join(f"{pct(values, q):{width}.1f}" for q in (0.5, 0.95, 0.99))


def report(mode: str, concurrency: int, r: dict[str, Any]) -> None:
    print(
        f"{mode:6} c={concurrency:<3} {r['rps']:7.1f} req/s  e2e p50/95/99 {trio(r['e2e'])} ms  "
        f"model {statistics.median(r['model']):6.1f} ms  overhead p50/95/99 "
        f"{trio(r['overhead'])} ms  http {trio(r['http'])} ms  paths {r['paths']}"
    )


def run_stack(
    mode: str, concurrencies: list[int], requests: int, seed: int, broker: Broker | None
) -> None:
    """Start ``mode``'s processes, warm them up, and load them at each concurrency."""
    tmp = Path(tempfile.mkdtemp(prefix=f"pictguard-bench-{mode}-"))
    port = free_port()
    stack = Stack([f"http://127.0.0.1:{port}"], {})
    try:
        if broker is None:
            cfg = with_tiny_clip(base_config(tmp, port=port), tmp)
            start(stack, ["serve"], cfg, tmp, "serve")
        else:
            prefix = "benchv."
            cfg = with_tiny_clip(kafka_config(tmp / "classify", broker, prefix), tmp)
            start(stack, ["run", "classify"], cfg, tmp, "classify")
            cfg = with_tiny_clip(
                kafka_config(tmp / "api", broker, prefix, port=port, replica_id="bench"), tmp
            )
            start(stack, ["run", "api"], cfg, tmp, "api")
        wait_ready(stack, timeout=180)
        warm_up(stack, timeout=180)
        for concurrency in concurrencies:
            seed += 100_000
            images = [image_bytes(seed + i, "PNG", 96) for i in range(requests)]
            result = asyncio.run(load(stack.url, images, concurrency))
            report(mode, concurrency, result)
    finally:
        stack.stop()


async def broker_floor(broker: Broker, trips: int = 300) -> list[float]:
    """Milliseconds from producing one record to a bare consumer fetching it, one at a time."""
    topic = "bench-floor"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, acks="all")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    try:
        first = await producer.send_and_wait(topic, b"start", partition=0)
        part = TopicPartition(topic, 0)
        consumer.assign([part])
        consumer.seek(part, first.offset + 1)
        took: list[float] = []
        for _ in range(trips):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 600, partition=0)
            while not any((await consumer.getmany(timeout_ms=1000)).values()):
                pass
            took.append((time.perf_counter() - started) * 1000)
        return took
    finally:
        await producer.stop()
        await consumer.stop()


def run_mode(mode: str, args: argparse.Namespace, seed: int) -> None:
    if mode == "single":
        run_stack(mode, args.concurrency, args.requests, seed, None)
        return
    broker = start_broker()
    try:
        floor = asyncio.run(broker_floor(broker))
        print(
            f"kafka  broker floor: produce → fetch of one record p50/95/99 "
            f"{trio(floor, width=0)} ms "
            f"(fetch wait {FETCH_WAIT_MS} ms); an upload makes this trip twice"
        )
    finally:
        broker.stop()
    for i, concurrency in enumerate(args.concurrency):
        broker = start_broker()  # a fresh log each time (see the module notes)
        try:
            run_stack(mode, [concurrency], args.requests, seed + i * 1_000_000, broker)
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--modes", default="single,kafka")
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    print("tiny random-weight open_clip (ViT, 32 px), 96-px PNG uploads, unique per request")
    for i, mode in enumerate(args.modes.split(",")):
        run_mode(mode, args, seed=i * 10_000_000)


if __name__ == "__main__":
    main()
