"""Images/s through one remote classify worker against a local classify, same model, same run.

Both runs take the same realistic photos (``tests/media.py``) as scan requests on the
in-process bus and time publish → last verdict:

- **local**: the classify stage and engine in this process (``pictguard serve`` without
  remote workers);
- **remote**: this process serves the worker API (hash lists here, the bytes shipped per
  lease) and one ``pictguard run classify --remote http://127.0.0.1:PORT`` subprocess
  leases, downloads, classifies and answers over loopback HTTP.

Same model (NudeNet by default), same ``classify.max_batch``. On one machine the worker and
the server share the cores, so the ratio is an upper bound on the HTTP hop's cost: a real
remote GPU adds the network's round trips and bandwidth but takes the model off the
server. Examples::

    python bench/remote.py --n 96
    python bench/remote.py --n 256 --size 1280x960 --batch 16 --pullers 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classify.remote.role import server as remote_server
from classify.role import start_engine
from pictguard.roles import build_api, classify_loops, fast_path
from pictguard.runtime import Runtime, open_runtime, run_all
from pictguard.settings import Settings
from pipeline.bus.base import Consumer
from pipeline.context import Mode
from pipeline.events import Lane, ScanRequest, Source, Verdict, decode, encode
from pipeline.topics import SCAN_BULK, VERDICTS
from tests.media import photo_jpeg
from tests.servers import free_port
from validate_api.role import serve_http

TOKEN = "bench-worker-token-0123456789abcdef"


def settings(tmp: Path, args: argparse.Namespace, *, remote: bool, port: int = 0) -> Settings:
    classify: dict[str, Any] = {
        "classifiers": ["hashlist", args.model],
        "max_batch": args.batch,
        "verdict_cache": False,  # every image runs the model, in both runs
    }
    if remote:
        classify["remote"] = {
            "enabled": True,
            "workers": [{"id": "bench", "token": TOKEN}],
            "rate_per_s": 10_000,
            "burst": 10_000,
        }
    return Settings(
        storage={"state_dir": str(tmp)},  # type: ignore[arg-type]
        metrics={"port": 0},  # type: ignore[arg-type]
        classify=classify,  # type: ignore[arg-type]
        api={"host": "127.0.0.1", "port": port},  # type: ignore[arg-type]
    )


async def publish(rt: Runtime, images: list[bytes]) -> None:
    topic = rt.settings.topic(SCAN_BULK)
    for data in images:
        request = ScanRequest(
            lane=Lane.BULK, source=Source.BACKFILL, content=data, content_type="image/jpeg"
        )
        await rt.bus.produce(topic, encode(request), request.request_id.encode())


async def count_verdicts(consumer: Consumer, n: int) -> list[Verdict]:
    seen: list[Verdict] = []
    while len(seen) < n:
        batch = await consumer.getmany(200, 500)
        seen += [decode(m.value, Verdict) for m in batch]
        await consumer.commit(batch)
    return seen


async def timed(rt: Runtime, images: list[bytes], warm: list[bytes]) -> float:
    """Seconds from publishing ``images`` to their last verdict (after a warm-up batch)."""
    consumer = rt.bus.consumer([rt.settings.topic(VERDICTS)], "bench")
    await consumer.start()
    await publish(rt, warm)
    await count_verdicts(consumer, len(warm))
    started = time.perf_counter()
    await publish(rt, images)
    verdicts = await count_verdicts(consumer, len(images))
    elapsed = time.perf_counter() - started
    await consumer.stop()
    errors = [v for v in verdicts if v.decision.value == "error"]
    if errors:
        raise SystemExit(f"{len(errors)} error verdicts, e.g. {errors[0].detail}")
    return elapsed


async def local(images: list[bytes], warm: list[bytes], args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(Path(tmp), args, remote=False)
        async with open_runtime(s, mode=Mode.SINGLE) as rt:
            await rt.start_tables()
            engine = await start_engine(rt)
            loops = await classify_loops(rt, engine)
            running = asyncio.create_task(run_all(loops, rt.stop))
            try:
                return await timed(rt, images, warm)
            finally:
                rt.stop.set()
                await running
                await rt.aclose()


async def remote(images: list[bytes], warm: list[bytes], args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        s = settings(Path(tmp), args, remote=True, port=port)
        async with open_runtime(s, mode=Mode.SINGLE) as rt:
            await rt.start_tables()
            engine = await start_engine(
                rt, s.classify.model_copy(update={"classifiers": ["hashlist"]})
            )
            fast = await fast_path(rt, engine)
            side = await remote_server(rt, fast, local_classifier=False)
            app = await build_api(rt, engine, fast=fast, routers=[side.router])
            started = asyncio.Event()
            loops = [serve_http(app, "127.0.0.1", port, rt.stop, started), *side.loops]
            running = asyncio.create_task(run_all(loops, rt.stop))
            await started.wait()
            worker = start_worker(Path(tmp), args, f"http://127.0.0.1:{port}")
            try:
                return await timed(rt, images, warm)
            finally:
                worker.terminate()
                worker.wait(30)
                rt.stop.set()
                await running
                await rt.aclose()


def start_worker(tmp: Path, args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    config = {
        "metrics": {"port": 0},
        "storage": {"state_dir": str(tmp / "worker")},
        "classify": {
            "classifiers": ["hashlist", args.model],
            "max_batch": args.batch,
            "worker": {"token": TOKEN, "pullers": args.pullers},
        },
    }
    path = tmp / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pictguard.cli",
            "-c",
            str(path),
            "run",
            "classify",
            "--remote",
            url,
        ],
        env=env,
        stdout=subprocess.DEVNULL if not args.verbose else None,
        stderr=subprocess.DEVNULL if not args.verbose else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=96, help="photos per run")
    parser.add_argument("--size", default="1024x768", help="photo size WxH")
    parser.add_argument("--model", default="nudenet", help="classifier (same on both sides)")
    parser.add_argument("--batch", type=int, default=16, help="classify.max_batch, both sides")
    parser.add_argument("--pullers", type=int, default=2, help="the worker's open lease calls")
    parser.add_argument("--rounds", type=int, default=2, help="local/remote pairs, alternating")
    parser.add_argument("--verbose", action="store_true", help="show the worker's log")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    t = time.perf_counter()
    images = [photo_jpeg(i, width, height) for i in range(args.n)]
    warm = [photo_jpeg(100_000 + i, width, height) for i in range(args.batch)]
    mb = sum(map(len, images)) / 1e6
    print(
        f"{args.n} photos {args.size} ({mb:.1f} MB, generated in {time.perf_counter() - t:.1f} s), "
        f"model {args.model}, max_batch {args.batch}, CPU cores: {os.cpu_count()}"
    )
    for r in range(args.rounds):
        loc = args.n / asyncio.run(local(images, warm, args))
        rem = args.n / asyncio.run(remote(images, warm, args))
        print(
            f"round {r + 1}: local {loc:6.1f} img/s   remote (1 worker, loopback HTTP) "
            f"{rem:6.1f} img/s   ratio remote/local {rem / loc:.2f}"
        )


if __name__ == "__main__":
    main()
