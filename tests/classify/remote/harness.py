"""An in-process instance with the remote workers' server, on real loopback HTTP.

The pieces are the composition root's own (``open_runtime``, ``fast_path``, ``build_api``)
over the in-process bus; only the lease clock is a :class:`FakeClock`, so a test moves
time past a lease instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from classify.remote.dispatcher import Dispatcher
from classify.remote.protocol import LEASE_PATH, VERDICTS_PATH
from classify.remote.role import server
from classify.role import start_engine
from pictguard.roles import build_api, fast_path
from pictguard.runtime import Runtime, open_runtime, run_all
from pictguard.settings import Settings
from pipeline.bus.base import Consumer
from pipeline.context import Mode
from pipeline.events import Lane, ScanRequest, Source, Verdict, decode, encode
from pipeline.topics import SCAN_BULK, SCAN_SYNC, VERDICTS
from tests.servers import free_port

# Tokens of the test configuration (never real secrets).
TOKENS = {
    "gpu-a": "worker-a-token-0123456789abcdef",
    "gpu-b": "worker-b-token-0123456789abcdef",
    "fedi": "fedi-safety-key-0123456789abcdef",
}
ADMIN_TOKEN = "admin-token-0123456789abcdef"
CLIENT_TOKEN = "client-token-0123456789abcdef"
LEASE_S = 30.0


class FakeClock:
    """Lease time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(tmp: Path, port: int, **remote: Any) -> Settings:
    workers = [
        {"id": "gpu-a", "token": TOKENS["gpu-a"]},
        {"id": "gpu-b", "token": TOKENS["gpu-b"]},
        {"id": "fedi", "token": TOKENS["fedi"], "protocol": "fedi-safety"},
    ]
    return Settings(
        storage={"state_dir": str(tmp / "state")},  # type: ignore[arg-type]
        metrics={"port": 0},  # type: ignore[arg-type]
        classify={  # type: ignore[arg-type]
            "classifiers": ["hashlist", "colour"],
            "remote": {
                "enabled": True,
                "workers": workers,
                "lease_s": LEASE_S,
                "rate_per_s": 1000,
                "burst": 100_000,
                **remote,
            },
        },
        api={  # type: ignore[arg-type]
            "host": "127.0.0.1",
            "port": port,
            "deadline_s": 5,
            "clients": [{"id": "script", "token": CLIENT_TOKEN}],
        },
        enforce={"admin_token": ADMIN_TOKEN},  # type: ignore[arg-type]
    )


@dataclass
class Instance:
    url: str
    runtime: Runtime
    dispatcher: Dispatcher
    clock: FakeClock
    verdicts: list[Verdict] = field(default_factory=list)

    async def publish(self, data: bytes, lane: Lane = Lane.BULK) -> str:
        """A scan request carrying ``data``, as ingest (bulk) or the API (sync) would."""
        request = ScanRequest(lane=lane, source=Source.API, content=data, content_type="image/jpeg")
        topic = SCAN_SYNC if lane is Lane.SYNC else SCAN_BULK
        await self.runtime.bus.produce(
            self.runtime.settings.topic(topic), encode(request), request.request_id.encode()
        )
        return request.request_id

    async def wait_for(self, what: str, check: Any, timeout: float = 30.0) -> None:
        """Poll ``check()`` until truthy (the event loop keeps serving meanwhile)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not check():
            if loop.time() > until:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    def per_request(self) -> Counter[str]:
        return Counter(v.request_id for v in self.verdicts)


@contextlib.asynccontextmanager
async def instance(tmp: Path, **remote: Any) -> AsyncIterator[Instance]:
    """The API with the worker endpoints and the remote consume loops, running."""
    port = free_port()
    s = settings(tmp, port, **remote)
    clock = FakeClock()
    async with open_runtime(s, mode=Mode.SINGLE) as rt:
        await rt.start_tables()
        lists_only = s.classify.model_copy(update={"classifiers": ["hashlist"]})
        engine = await start_engine(rt, lists_only)
        fast = await fast_path(rt, engine)
        remote_side = await server(
            rt, fast, local_classifier=False, admin_token=s.enforce.admin_token, clock=clock
        )
        app = await build_api(rt, engine, fast=fast, routers=[remote_side.router])
        from validate_api.role import serve_http

        started = asyncio.Event()
        collector = rt.bus.consumer([s.topic(VERDICTS)], "test-verdicts")
        await collector.start()
        inst = Instance(f"http://127.0.0.1:{port}", rt, remote_side.dispatcher, clock)
        loops = [
            serve_http(app, "127.0.0.1", port, rt.stop, started),
            *remote_side.loops,
            _collect(collector, inst.verdicts, rt.stop),
        ]
        running = asyncio.create_task(run_all(loops, rt.stop))
        try:
            await asyncio.wait_for(started.wait(), 30)
            yield inst
        finally:
            rt.stop.set()
            await asyncio.wait_for(running, 30)
            await collector.stop()
            await rt.aclose()


async def _collect(consumer: Consumer, into: list[Verdict], stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(100, 100)
        into.extend(decode(m.value, Verdict) for m in batch)
        await consumer.commit(batch)


class ManualWorker:
    """A worker driven step by step by a test, over the pictguard worker protocol."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    async def lease(self, most: int = 8, wait_s: float = 5.0) -> httpx.Response:
        return await self.client.post(LEASE_PATH, json={"max": most, "wait_s": wait_s})

    async def jobs(self, most: int = 8, wait_s: float = 5.0) -> list[dict[str, Any]]:
        response = await self.lease(most, wait_s)
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    async def content(self, job: dict[str, Any]) -> httpx.Response:
        return await self.client.get(job["content"])

    async def answer(self, lease: str, decision: str = "allow", **findings: Any) -> httpx.Response:
        result = {"lease": lease, "findings": {"decision": decision, **findings}}
        return await self.client.post(VERDICTS_PATH, json={"results": [result]})

    async def aclose(self) -> None:
        await self.client.aclose()
