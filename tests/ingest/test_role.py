"""The ingest role as ``pictguard run ingest`` starts it: every enabled source, one process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from pictguard.roles import ingest_loops
from pictguard.runtime import open_runtime, run_all
from pictguard.settings import Settings
from pipeline.context import Mode
from pipeline.topics import TOPICS
from tests.ingest.helpers import scan_requests
from tests.servers import free_port


async def test_enabled_sources_run_together_and_stop_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    watched, reconciled = tmp_path / "watched", tmp_path / "old-media"
    watched.mkdir()
    reconciled.mkdir()
    (reconciled / "before-events.jpg").write_bytes(b"was there before pictguard")
    port = free_port()
    ingest = settings.ingest.model_dump()
    ingest["webhook"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "minio_token": "t" * 20,
    }
    ingest["watch"] = {"enabled": True, "roots": [str(watched)], "settle_s": 0.5}
    ingest["reconcile"] = {"enabled": True, "locations": [str(reconciled)], "min_age_s": 0}
    configured = settings.model_copy(
        update={"ingest": type(settings.ingest).model_validate(ingest)}
    )
    async with open_runtime(configured, mode=Mode.DISTRIBUTED) as runtime:
        await runtime.bus.ensure_topics([configured.topic(t.name) for t in TOPICS])
        loops = await ingest_loops(runtime)
        assert (
            len(loops) == 4
        )  # events stage, webhook, watcher, reconcile (enforce keeps the ledger)
        running = asyncio.create_task(run_all(loops, runtime.stop))
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(200):
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/healthz")).is_success:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            # Readiness says when the watch is in place (no sleep racing a busy machine).
            async with asyncio.timeout(60):
                while any(c.startswith("watch ") for c in runtime.health.not_ready()):
                    await asyncio.sleep(0.05)
            (watched / "new.png").write_bytes(b"arrived while running")
            requests = await scan_requests(runtime.bus, configured, at_least=2)
        finally:
            runtime.stop.set()
            await asyncio.wait_for(running, 30)
    assert sorted((r.source.value, r.object.key) for r in requests if r.object) == [
        ("reconcile", "before-events.jpg"),
        ("watch", "new.png"),
    ]
