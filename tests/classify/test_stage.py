"""The classify stage keeps the sync lane moving while bulk scans wait on the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from classify.base import ClassifyTables
from classify.engine import ClassifyEngine
from classify.stage import ClassifyStage
from pictguard.settings import load_settings
from pipeline.bus.base import Message
from pipeline.bus.memory import MemoryBus
from pipeline.events import Lane, ObjectRef, ScanRequest, Source, StoreKind, encode
from pipeline.samples import image_bytes
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from tests.faultproxy import Fault, FaultProxy
from tests.servers import S3Server


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def as_message(request: ScanRequest, topic: str) -> Message:
    return Message(topic=topic, value=encode(request), key=request.key.encode())


async def test_bulk_scans_stuck_on_the_store_do_not_hold_up_uploads(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    client.put_object(Bucket=bucket, Key="stuck.png", Body=image_bytes(1, "PNG", 64))
    proxy.add(Fault("timeout", method="GET", path="/stuck.png"))  # never answers
    settings = load_settings(
        s3={
            "endpoint_url": proxy.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "read_timeout_s": 120,
            "max_attempts": 1,
        },
        storage={"state_dir": str(tmp_path)},
        classify={"classifiers": ["hashlist"], "concurrency": 1},
    )
    state = SqliteState(tmp_path / "pictguard.sqlite3")
    await state.start()
    engine = ClassifyEngine(
        settings.classify, ClassifyTables(state.table("hashlists"), state.table("cache"))
    )
    await engine.start()
    bus = MemoryBus()
    await bus.start()
    stores = Stores(settings.s3)
    stage = ClassifyStage(bus, settings, stores, engine)
    stuck = ObjectRef(store=StoreKind.S3, bucket=bucket, key="stuck.png")
    bulk = [ScanRequest(object=stuck) for _ in range(3)]
    bulk_task = asyncio.create_task(stage.handle([as_message(r, "bulk") for r in bulk]))
    try:
        while proxy.attempts("GET", "/stuck.png") == 0:  # the one bulk slot is taken
            await asyncio.sleep(0.05)
        verdicts = bus.consumer([settings.topic("verdicts")], "t", from_beginning=True)
        await verdicts.start()
        upload = ScanRequest(lane=Lane.SYNC, source=Source.API, content=image_bytes(2, "PNG", 64))
        # Handled (its verdict produced) while every bulk slot is still waiting on S3.
        await asyncio.wait_for(stage.handle([as_message(upload, "sync")]), 60)
        assert not bulk_task.done()
        produced = await verdicts.getmany(1000, 10)
        assert [m.key for m in produced] == [upload.key.encode()]
        await verdicts.stop()
        assert proxy.attempts("GET", "/stuck.png") == 1  # the others still wait for the slot
    finally:
        bulk_task.cancel()
        await asyncio.gather(bulk_task, return_exceptions=True)
        await stores.close()
        await engine.stop()
        await bus.stop()
        await state.stop()
