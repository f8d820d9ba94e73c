"""Benchmark: what one upload costs pictguard when pict-rs asks it, step by step.

pict-rs calls the validation API for every upload, federated thumbnail and proxied image,
so the cost per upload is the product. The load generator sends what pict-rs sends: a POST
to ``/api/v1/scan/<client>`` whose raw body is streamed in 16 KiB chunks (chunked transfer
encoding, as pict-rs's reqwest body stream), ``User-Agent: pict-rs v0.5.0-main``, from
aiohttp on uvloop (the lightest Python client; it shares the machine with the server).

Inputs (``tests/media.py``, cached on disk after the first run):

- ``photos``: 800×600 photo-like JPEGs (``photo_jpeg``, 75–92 KB). 64 distinct images;
  every request of a run carries a JPEG comment of its own, so each is new content to
  pictguard (a new sha256, nothing cached) at the same decode cost. The targets are
  measured on these.
- ``repeat``: the 64 photos as they were sent before: answered from the verdict cache.
- ``mix``: ``upload_mix(64)`` — what instances receive: photo JPEGs 640–4,000 px, PNG
  screenshots with text, WebP, animated GIF, PNG photos, 20 KB–5 MB; made new content
  each run as the photos are (trailing bytes for the formats that are not JPEG).
- ``tiny``: 96-px PNGs of random noise (the old bench's input), for comparison only.

Servers, one process each:

- ``echo-aiohttp`` and ``echo-uvicorn``: a raw server that reads the body and answers a
  small JSON, on uvloop, behind the same client: the floor of HTTP + load generator.
- ``single``: ``pictguard serve`` (API, classify, enforce in one process).
- ``kafka``: ``pictguard run api`` + ``pictguard run classify`` over a Tansu broker (a
  fresh broker and processes per concurrency: Tansu's memory log slows as it grows).

Classifier sets: ``lists`` (hash lists only: sha256 + PDQ against the lists, no model),
``noop`` (hash lists + a model registered by this script that returns nothing at no cost:
every new image takes the model path, the sync lane and the batcher, so the figures are
pictguard's own cost around a model), ``nudenet`` (hash lists + NudeNet 320n on CPU). The
hash lists hold ``--list-entries`` random blocklist entries (sha256 + PDQ), so every
upload pays a real PDQ search.

Per run: client p50/p95/p99 and uploads/s; the server's own p50/p95/p99 (the API's
``Server-Timing`` header: from the request reaching the app to the answer built), and the
median of each server step: ``route`` (Starlette/FastAPI before the handler), ``read``
(the body), ``sha256``, ``lookup`` (exact lists + verdict cache), ``decode`` (decode +
PDQ hash in the decode pool, queueing included), ``pdq`` (the PDQ hash alone, inside
decode), ``match`` (PDQ search), ``wait`` (sync lane: publish → verdict), ``classify``
(classify's own time inside ``wait``: decode, model, policy), ``bus`` (= wait − classify:
the broker, or the in-process bus and stage, and queueing) and ``reply`` (encoding the
answer); plus CPU milliseconds per upload of each process (server, broker, the load
generator itself), read from /proc around the run, because the machine is shared.

Kafka mode measures the broker's own floor first: one record produced and fetched by a
bare client at the same fetch wait; an upload makes that trip twice.

    python bench/validate.py [--servers echo-aiohttp,echo-uvicorn,single,kafka]
        [--classifiers lists,noop,nudenet] [--sets photos,repeat,mix,tiny]
        [--concurrency 1,16,64] [--requests 256] [--profile DIR]

``--profile DIR`` records each pictguard run with py-spy (``pip install py-spy``) into
DIR as speedscope JSON (``BENCH_PROFILE_FORMAT=raw`` for collapsed stacks); with py-spy
installed the CPU per upload is also split by thread (``loop``: the event loop,
``decode``: the decode pool, ``sqlite``: the state store's writer, ``model-*``: batchers,
``other``: native threads such as onnxruntime's). ``--no-publish`` measures without
publishing fast answers' verdicts for enforce: what recording them costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENT = "pictrs-bench"
USER_AGENT = "pict-rs v0.5.0-main"
CHUNK = 16 * 1024
FETCH_WAIT_MS = 5
PHOTOS = 64
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
PROFILE_FORMAT = os.environ.get("BENCH_PROFILE_FORMAT", "speedscope")
MEDIA_CACHE = Path(tempfile.gettempdir()) / "pictguard-bench-media"
STEPS = (
    "route",
    "read",
    "sha256",
    "lookup",
    "pool",
    "decode",
    "pdq",
    "match",
    "wait",
    "classify",
    "bus",
    "reply",
)


# --------------------------------------------------------------------------- the no-op model


def register_noop_model() -> None:
    """``noop``: a model that costs nothing and finds nothing (bench only)."""
    from collections.abc import Sequence as Seq

    import numpy as np

    from classify.preprocess import CenterCrop, Preprocessor
    from classify.registry import Model, ModelOutput, register
    from classify.settings import ClassifySettings

    class NoopModel(Model):
        name = "noop"

        def __init__(self, settings: ClassifySettings) -> None:
            self.settings = settings

        @property
        def version(self) -> str:
            return "noop:1"

        @property
        def preprocessor(self) -> Preprocessor:
            return CenterCrop(8)

        def load(self) -> None:
            pass

        def predict(self, batch: Seq[np.ndarray]) -> list[ModelOutput]:
            return [ModelOutput() for _ in batch]

    register("noop", NoopModel, lambda s: None)  # type: ignore[arg-type,return-value]


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str


def _cached(name: str, make: Any) -> bytes:
    path = MEDIA_CACHE / name
    if path.exists():
        return path.read_bytes()
    data: bytes = make()
    MEDIA_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def photos(seed: int = 0) -> list[Upload]:
    """The 64 distinct 800×600 photo JPEGs."""
    from tests.media import photo_jpeg

    return [
        Upload(
            _cached(f"photo-{seed}-{i}.jpg", lambda i=i: photo_jpeg(seed + i, 800, 600)),
            "image/jpeg",
        )
        for i in range(PHOTOS)
    ]


def tagged(upload: Upload, tag: str) -> Upload:
    """The same image made new content (a sha256 of its own) at the same decode cost: a
    JPEG gets a comment segment, other formats trailing bytes, which decoders ignore."""
    text = tag.encode()
    if upload.content_type != "image/jpeg":
        return Upload(upload.data + b"\0" + text, upload.content_type)
    segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    return Upload(upload.data[:2] + segment + upload.data[2:], upload.content_type)


def mix(n: int, seed: int = 0) -> list[Upload]:
    from tests.media import upload_mix

    index = MEDIA_CACHE / f"mix-{seed}-{n}.json"
    if index.exists():
        types = json.loads(index.read_text())
        return [
            Upload((MEDIA_CACHE / f"mix-{seed}-{i}").read_bytes(), t) for i, t in enumerate(types)
        ]
    items = upload_mix(n, seed)
    MEDIA_CACHE.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(items):
        (MEDIA_CACHE / f"mix-{seed}-{i}").write_bytes(item.data)
    index.write_text(json.dumps([item.content_type for item in items]))
    return [Upload(item.data, item.content_type) for item in items]


def tiny(n: int, seed: int) -> list[Upload]:
    from pipeline.samples import image_bytes

    return [Upload(image_bytes(seed + i, "PNG", 96), "image/png") for i in range(n)]


# --------------------------------------------------------------------------- measuring


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def trio(values: Sequence[float]) -> str:
    return "/".join(f"{pct(values, q):.1f}" for q in (0.5, 0.95, 0.99))


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads) or of one of its threads."""
    path = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_groups(pid: int) -> dict[int, str]:
    """Native thread id → its Python thread's name without the number (``decode_1`` →
    ``decode``; the main thread runs the event loop: ``loop``), read with ``py-spy dump``;
    empty without py-spy."""
    try:
        out = subprocess.run(
            [PY_SPY, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    groups = {}
    for tid, name in re.findall(r'^Thread (\d+) \([a-z]+\): "([^"]+)"', out, re.M):
        groups[int(tid)] = "loop" if name == "MainThread" else re.sub(r"[-_]?\d+$", "", name)
    return groups


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` so far."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            seconds[int(task.name)] = cpu_seconds(pid, int(task.name))
    return seconds


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def server_timing(header: str) -> dict[str, float]:
    """``read;dur=0.41, sha256;dur=0.05`` → {"read": 0.41, "sha256": 0.05}."""
    timings: dict[str, float] = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                with contextlib.suppress(ValueError):
                    timings[name] = float(value)
    return timings


@dataclass
class Run:
    label: str
    concurrency: int
    seconds: float = 0.0
    e2e: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    load: str = ""

    @property
    def rate(self) -> float:
        return len(self.e2e) / self.seconds if self.seconds else 0.0

    def print(self) -> None:
        server = f"server {trio(self.server)} ms  " if self.server else ""
        print(
            f"{self.label:34} c={self.concurrency:<3} {self.rate:7.1f} up/s  "
            f"client p50/95/99 {trio(self.e2e)} ms  {server}paths {self.paths} "
            f"status {self.statuses}  load {self.load}",
            flush=True,
        )
        steps = "  ".join(
            f"{name} {pct(self.steps[name], 0.5):.2f}"
            for name in STEPS
            if name in self.steps and pct(self.steps[name], 0.99) > 0.0005
        )
        gap = [e - s for e, s in zip(self.e2e, self.server, strict=False)] if self.server else []
        cpu = "  ".join(f"{k} {v:.2f}" for k, v in self.cpu_ms.items() if v >= 0.005)
        print(
            f"{'':34}       steps p50 ms: {steps or '-'}"
            + (f"  | client−server p50 {pct(gap, 0.5):.1f}" if gap else "")
            + f"  | CPU ms/upload: {cpu}",
            flush=True,
        )


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def load(
    url: str, uploads: Sequence[Upload], concurrency: int, run: Run, pids: dict[str, int]
) -> Run:
    """POST every upload as pict-rs does, ``concurrency`` at a time."""
    import aiohttp

    pending = list(reversed(uploads))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"User-Agent": USER_AGENT}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while pending:
                upload = pending.pop()
                started = time.perf_counter()
                async with client.post(
                    f"{url}/api/v1/scan/{CLIENT}",
                    data=_chunks(upload.data),
                    headers={**headers, "Content-Type": upload.content_type},
                ) as response:
                    raw = await response.read()
                    timing = response.headers.get("Server-Timing", "")
                took = (time.perf_counter() - started) * 1000
                run.e2e.append(took)
                run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
                with contextlib.suppress(ValueError):
                    path = str(json.loads(raw).get("path", "?"))
                    run.paths[path] = run.paths.get(path, 0) + 1
                steps = server_timing(timing)
                if "total" in steps:
                    run.server.append(steps.pop("total"))
                    for name, value in steps.items():
                        run.steps.setdefault(name, []).append(value)

        groups = {name: thread_groups(pid) for name, pid in pids.items() if name != "broker"}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        threads_before = {name: thread_cpu(pids[name]) for name in groups}
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        n = max(1, len(uploads))
        for name, pid in pids.items():
            run.cpu_ms[name] = (cpu_seconds(pid) - before[name]) * 1000 / n
            if name not in groups:
                continue
            groups[name].update(thread_groups(pid))  # threads started during the run
            for tid, seconds in thread_cpu(pid).items():
                group = f"{name}.{groups[name].get(tid, 'other')}"
                spent = (seconds - threads_before[name].get(tid, 0.0)) * 1000 / n
                run.cpu_ms[group] = run.cpu_ms.get(group, 0.0) + spent
        run.cpu_ms["client"] = client_cpu * 1000 / n
    run.load = load_average()
    return run


def run_load(
    url: str, uploads: Sequence[Upload], concurrency: int, label: str, pids: dict[str, int]
) -> Run:
    import uvloop

    run = Run(label, concurrency)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(load(url, uploads, concurrency, run, pids))
    return run


@contextlib.contextmanager
def profiled(directory: Path | None, pid: int, name: str) -> Iterator[None]:
    """py-spy records ``pid`` for the duration of the block."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            PROFILE_FORMAT,
            "--threads",
            "-o",
            str(directory / f"{name}.{PROFILE_FORMAT}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def echo_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def scan(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"accepted": True, "path": "echo", "bytes": len(body)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v1/scan/{client}", scan)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


def echo_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps({"accepted": True, "path": "echo", "bytes": size}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # The settings pictguard serves with (pipeline/http.py): uvloop and httptools.
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def config(tmp: Path, classifiers: str, port: int) -> dict[str, Any]:
    names = {
        "lists": ["hashlist"],
        "noop": ["hashlist", "noop"],
        "nudenet": ["hashlist", "nudenet"],
    }
    return {
        "storage": {"state_dir": str(tmp / "state")},
        "classify": {"classifiers": names[classifiers], "max_wait_ms": 2},
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "deadline_s": 9,
            "max_inflight": 1024,
            "clients": [{"id": CLIENT, "cidrs": ["127.0.0.0/8"]}],
        },
        "log": {"level": "WARNING"},
    }


def with_kafka(cfg: dict[str, Any], bootstrap: str, prefix: str) -> dict[str, Any]:
    cfg["kafka"] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "partitions": 4,
        "consumer_overrides": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300},
        "group_prefix": f"{prefix}pg-",
        # Tansu does not answer a fetch as soon as records arrive (Apache Kafka and Redpanda
        # do), so the 10 ms default would be broker latency, not pictguard's. Much shorter
        # costs more than it saves: each idle 2 ms poll loop burns ~13 % of a core in the
        # broker and as much again in the client, on a machine the load shares.
        "low_latency_fetch_wait_ms": FETCH_WAIT_MS,
    }
    cfg["storage"]["backend"] = "kafka"
    return cfg


def write_config(tmp: Path, name: str, cfg: dict[str, Any]) -> Path:
    import yaml

    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def import_lists(path: Path, tmp: Path, entries: int) -> None:
    """``entries`` random blocklist entries (sha256 + PDQ) through ``pictguard hashes import``."""
    if entries <= 0:
        return
    rng = random.Random(7)
    rows = ["list,sha256,pdq,pdq_quality,category,reason"]
    for _ in range(entries):
        rows.append(f"block,{rng.randbytes(32).hex()},{rng.randbytes(32).hex()},100,csam,bench")
    csv = tmp / "lists.csv"
    csv.write_text("\n".join(rows) + "\n")
    log = tmp / "import.log"
    proc = spawn(["--pictguard", "-c", str(path), "hashes", "import", str(csv)], log)
    if proc.wait(300) != 0:
        raise RuntimeError(f"hashes import failed:\n{log.read_text()[-3000:]}")


def wait_ready(
    url: str, procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path], timeout: float = 240
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.3)
    text = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    raise RuntimeError(f"{url} never became ready:\n{text}")


def warm_up(url: str, want_model: bool, timeout: float = 240) -> None:
    """Until an upload makes the whole trip (classify joined its group), then a few more."""
    import httpx

    deadline = time.monotonic() + timeout
    seed = 7_000_000
    done = 0
    while time.monotonic() < deadline and done < 20:
        seed += 1
        upload = tiny(1, seed)[0]
        response = httpx.post(
            f"{url}/api/v1/scan/{CLIENT}",
            content=upload.data,
            headers={"Content-Type": upload.content_type},
            timeout=30,
        )
        path = response.json().get("path")
        if done or not want_model or path == "model":
            done += 1
    if not done:
        raise RuntimeError(f"no verdict through {url} within {timeout} s")


@dataclass
class Stack:
    url: str
    pids: dict[str, int]
    procs: list[subprocess.Popen[bytes]]
    profile_pid: int
    primed: bool = False


@contextlib.contextmanager
def pictguard_stack(mode: str, classifiers: str, list_entries: int) -> Iterator[Stack]:
    from tests.servers import start_broker

    tmp = Path(tempfile.mkdtemp(prefix=f"pictguard-bench-{mode}-{classifiers}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    broker = start_broker() if mode == "kafka" else None
    try:
        if broker is None:
            path = write_config(tmp, "serve", config(tmp, classifiers, port))
            import_lists(path, tmp, list_entries)
            logs.append(tmp / "serve.log")
            procs.append(spawn(["--pictguard", "-c", str(path), "serve"], logs[-1]))
            pids = {"server": procs[0].pid}
        else:
            prefix = "benchv."
            paths = {}
            for role in ("classify", "api"):
                cfg = with_kafka(config(tmp / role, classifiers, port), broker.bootstrap, prefix)
                cfg["api"]["replica_id"] = "bench"
                paths[role] = write_config(tmp, role, cfg)
            import_lists(paths["api"], tmp, list_entries)
            for role in ("classify", "api"):
                logs.append(tmp / f"{role}.log")
                procs.append(spawn(["--pictguard", "-c", str(paths[role]), "run", role], logs[-1]))
            pids = {"api": procs[1].pid, "classify": procs[0].pid, "broker": broker.process.pid}
        wait_ready(url, procs, logs)
        warm_up(url, want_model=classifiers != "lists" or mode == "kafka")
        yield Stack(url, pids, procs, procs[-1].pid)
    finally:
        stop(procs)
        if broker is not None:
            broker.stop()


@contextlib.contextmanager
def echo_stack(kind: str) -> Iterator[Stack]:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix=f"pictguard-bench-{kind}-"))
    proc = spawn([f"--{kind}", str(port)], tmp / "echo.log")
    try:
        wait_port(port)
        yield Stack(f"http://127.0.0.1:{port}", {"server": proc.pid}, [proc], proc.pid)
    finally:
        stop([proc])


async def broker_floor(bootstrap: str, trips: int = 300) -> list[float]:
    """Milliseconds from producing one record to a bare consumer fetching it, one at a time."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = "bench-floor"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_WAIT_MS, enable_auto_commit=False
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


# --------------------------------------------------------------------------- the runs


def uploads_for(name: str, requests: int, round_: int) -> list[Upload]:
    base = photos()
    if name == "photos":
        return [tagged(base[i % PHOTOS], f"bench {round_} {i}") for i in range(requests)]
    if name == "repeat":
        return [base[i % PHOTOS] for i in range(requests)]
    if name == "mix":
        return [tagged(upload, f"bench {round_} {i}") for i, upload in enumerate(mix(64))]
    return tiny(requests, 10_000 * round_)


def prime(stack: Stack) -> None:
    """Send the 64 photos once, so that ``repeat`` finds them in the verdict cache; over
    Kafka, wait until the API's copy of the cache has them."""
    if stack.primed:
        return
    run_load(stack.url, photos(), 16, "prime", stack.pids)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run_load(stack.url, photos()[-1:], 1, "prime", stack.pids).paths.get("fast"):
            break
        time.sleep(0.5)
    stack.primed = True


def measure(
    stack: Stack, label: str, args: argparse.Namespace, concurrency: int, round_: int
) -> None:
    for name in args.sets:
        if name == "repeat":
            prime(stack)
        uploads = uploads_for(name, args.requests, round_)
        with profiled(
            args.profile, stack.profile_pid, f"{label}-{name}-c{concurrency}".replace(" ", "_")
        ):
            run = run_load(stack.url, uploads, concurrency, f"{label} {name}", stack.pids)
        run.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="echo-aiohttp,echo-uvicorn,single,kafka")
    parser.add_argument("--classifiers", default="lists,noop,nudenet")
    parser.add_argument("--sets", default="photos,repeat,mix,tiny")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=256, help="uploads per run (mix: 64)")
    parser.add_argument("--list-entries", type=int, default=10_000)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="measure without publishing fast answers' verdicts (what recording them costs)",
    )
    args = parser.parse_args()
    if args.no_publish:
        os.environ["BENCH_NO_PUBLISH"] = "1"
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.sets = args.sets.split(",")
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; uploads streamed in 16 KiB chunks, "
        f"{args.requests} per run (mix: 64); hash lists: {args.list_entries} blocklist entries",
        flush=True,
    )
    photos()  # generated (and cached) before any clock runs
    if "mix" in args.sets:
        mix(64)
    round_ = 0
    for server in args.servers.split(","):
        if server.startswith("echo-"):
            with echo_stack(server) as stack:
                for concurrency in args.concurrency:
                    round_ += 1
                    uploads = uploads_for("photos", args.requests, round_)
                    run_load(
                        stack.url, uploads, concurrency, f"{server} photos", stack.pids
                    ).print()
            continue
        if server == "kafka":
            from tests.servers import start_broker

            broker = start_broker()
            try:
                floor = asyncio.run(broker_floor(broker.bootstrap))
            finally:
                broker.stop()
            print(
                f"kafka broker floor: produce → fetch of one record p50/95/99 {trio(floor)} ms "
                f"(fetch wait {FETCH_WAIT_MS} ms); an upload over Kafka makes this trip twice",
                flush=True,
            )
        for classifiers in args.classifiers.split(","):
            if server == "single":
                with pictguard_stack(server, classifiers, args.list_entries) as stack:
                    for concurrency in args.concurrency:
                        round_ += 1
                        measure(stack, f"{server} {classifiers}", args, concurrency, round_)
            else:
                for concurrency in args.concurrency:
                    round_ += 1
                    with pictguard_stack(server, classifiers, args.list_entries) as stack:
                        measure(stack, f"{server} {classifiers}", args, concurrency, round_)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("--echo-aiohttp", "--echo-uvicorn"):
        (echo_aiohttp if sys.argv[1] == "--echo-aiohttp" else echo_uvicorn)(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--pictguard":
        if os.environ.get("BENCH_NO_PUBLISH"):
            # What recording fast answers costs: never in production (no audit of them).
            from validate_api.service import Validator

            Validator._publish = lambda self, verdict: None  # type: ignore[method-assign]
        register_noop_model()
        from pictguard.cli import main as pictguard_main

        sys.argv = ["pictguard", *sys.argv[2:]]
        pictguard_main()
    else:
        main()
