"""Helpers of the tests under tests/ingest/ (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pictguard.settings import Settings, load_settings
from pipeline.bus.base import Bus, Message
from pipeline.events import DeadLetter, ScanRequest, decode
from pipeline.topics import DEAD_LETTER, SCAN_BULK
from tests.servers import Broker, S3Server


def make_settings(
    broker: Broker | None, s3: S3Server, prefix: str, state_dir: Path, **ingest: Any
) -> Settings:
    kafka: dict[str, Any] = {"topic_prefix": prefix, "partitions": 3}
    if broker is not None:
        kafka = broker.settings(**kafka).model_dump()
    return load_settings(
        kafka=kafka,
        s3={
            "endpoint_url": s3.endpoint,
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
        },
        storage={"state_dir": str(state_dir)},
        ingest=ingest,
    )


@dataclass
class Stored:
    key: str
    size: int
    etag: str


def put_objects(s3: S3Server, bucket: str, keys: Iterable[str]) -> dict[str, Stored]:
    """Upload a small distinct body per key; what S3 says about each."""
    client: Any = s3.client()
    out = {}
    for i, key in enumerate(keys):
        body = b"\xff\xd8\xff\xe0 not really a jpeg %d" % i
        client.put_object(Bucket=bucket, Key=key, Body=body)
        head = client.head_object(Bucket=bucket, Key=key)
        out[key] = Stored(key, int(head["ContentLength"]), head["ETag"].strip('"'))
    return out


async def read_topic(
    bus: Bus, topic: str, *, at_least: int, settle_polls: int = 3, max_polls: int = 150
) -> list[Message]:
    """Every message in ``topic`` (groupless, from the start).

    Reads until ``at_least`` arrived, then a few more polls so that extras (duplicates) that
    should not be there would show up too.
    """
    consumer = bus.consumer([topic], None, from_beginning=True)
    await consumer.start()
    got: list[Message] = []
    quiet = 0
    try:
        for _ in range(max_polls):
            batch = await consumer.getmany(200, 1000)
            got += batch
            if len(got) >= at_least:
                quiet = quiet + 1 if not batch else 0
                if quiet >= settle_polls:
                    break
    finally:
        await consumer.stop()
    return got


async def scan_requests(bus: Bus, settings: Settings, at_least: int) -> list[ScanRequest]:
    messages = await read_topic(bus, settings.topic(SCAN_BULK), at_least=at_least)
    return [decode(m.value, ScanRequest) for m in messages]


async def dead_letters(bus: Bus, settings: Settings, at_least: int) -> list[DeadLetter]:
    messages = await read_topic(bus, settings.topic(DEAD_LETTER), at_least=at_least)
    return [decode(m.value, DeadLetter) for m in messages]


async def wait_until(predicate: Any, *, attempts: int = 300, every: float = 0.05) -> None:
    """Poll ``predicate`` (no timing assertion: a generous bound against hangs)."""
    for _ in range(attempts):
        if predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError("condition not reached")
