"""Fixtures for enforce tests: a state file, stores on the moto server, an in-process bus."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pictguard.settings import Settings, storage_scope
from pipeline.bus.base import Consumer
from pipeline.bus.memory import MemoryBus
from pipeline.events import (
    Decision,
    EnforcementAction,
    ObjectRef,
    StoreKind,
    Verdict,
    decode,
)
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from pipeline.topics import ACTIONS
from tests.servers import S3Server


def make_settings(
    s3_server: S3Server,
    tmp_path: Path,
    prefix: str,
    *,
    storage: dict[str, Any] | None = None,
    **enforce: Any,
) -> Settings:
    """Settings pointing at the moto server and a private state folder."""
    return Settings(
        kafka={"topic_prefix": prefix},
        s3={
            "endpoint_url": s3_server.endpoint,
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
            "path_style": True,
        },
        storage={"state_dir": tmp_path / "state", **(storage or {})},
        enforce=enforce,
    )


def verdict_for(
    bucket: str,
    key: str,
    decision: Decision = Decision.FLAG_CSAM,
    data: bytes | None = None,
    **fields: Any,
) -> Verdict:
    """A verdict as classify would send it for ``s3://bucket/key``."""
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    return Verdict(
        request_id=fields.pop("request_id", uuid.uuid4().hex),
        object=ObjectRef(store=StoreKind.S3, bucket=bucket, key=key),
        decision=decision,
        sha256=fields.pop("sha256", sha),
        scores=fields.pop("scores", {"csam": 0.91, "nsfw": 0.97}),
        **fields,
    )


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteState]:
    s = SqliteState(tmp_path / "state" / "pictguard.sqlite3")
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def put(s3_server: S3Server) -> Callable[..., bytes]:
    """Put an object on the moto server; returns its bytes."""
    client: Any = s3_server.client()

    def _put(bucket: str, key: str, data: bytes | None = None, **kwargs: Any) -> bytes:
        body = data if data is not None else uuid.uuid4().bytes * 64
        client.put_object(Bucket=bucket, Key=key, Body=body, **kwargs)
        return body

    return _put


@pytest.fixture
def s3(s3_server: S3Server) -> Any:
    """A boto3 client on the moto server, for checking what happened."""
    return s3_server.client()


def exists(s3: Any, bucket: str, key: str) -> bool:
    response = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    return any(item["Key"] == key for item in response.get("Contents", []))


class ActionTap:
    """Reads what enforce produced on the actions topic of a :class:`MemoryBus`."""

    def __init__(self, bus: MemoryBus, settings: Settings) -> None:
        self.consumer: Consumer = bus.consumer([settings.topic(ACTIONS)], "tap")

    async def start(self) -> None:
        await self.consumer.start()

    async def take(self) -> list[EnforcementAction]:
        messages = await self.consumer.getmany(0, 10_000)
        return [decode(m.value, EnforcementAction) for m in messages]


@pytest.fixture
async def env(
    s3_server: S3Server, tmp_path: Path, topic_prefix: str, state: SqliteState
) -> AsyncIterator[Callable[..., Any]]:
    """Build (settings, bus, stores, tap) for a test; everything is closed at the end."""
    opened: list[Stores] = []

    async def _env(
        storage: dict[str, Any] | None = None, **enforce: Any
    ) -> tuple[Settings, MemoryBus, Stores, ActionTap]:
        settings = make_settings(s3_server, tmp_path, topic_prefix, storage=storage, **enforce)
        bus = MemoryBus()
        # The scope the composition root gives every process (allowed locations, quarantine).
        stores = Stores(settings.s3, scope=storage_scope(settings))
        opened.append(stores)
        tap = ActionTap(bus, settings)
        await tap.start()
        return settings, bus, stores, tap

    yield _env
    for stores in opened:
        await stores.close()
