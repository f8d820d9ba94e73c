"""Fixtures for enforce tests: a state file, stores on the moto server, an in-process bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pictguard.settings import Settings, storage_scope
from pipeline.bus.memory import MemoryBus
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from tests.enforce.helpers import ActionTap, make_settings
from tests.servers import S3Server


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
