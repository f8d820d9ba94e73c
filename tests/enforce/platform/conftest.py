"""Fixtures: FakePictrs storing in a fresh moto bucket, FakeLemmy in front of it, an enforcer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from enforce.enforcer import Enforcer
from enforce.platform.flow import PlatformFlow
from enforce.platform.mastodon import Runner
from enforce.records import Records
from pipeline.state.sqlite import SqliteState
from tests.enforce.platform.world import PICTRS_KEY, LemmyWorld
from tests.fakes import FakeLemmy, FakePictrs, S3Store
from tests.servers import S3Server


@pytest.fixture
def pictrs(s3_server: S3Server, bucket: str) -> Iterator[FakePictrs]:
    """pict-rs 0.5 keeping its files in ``bucket`` on the moto server."""
    store = S3Store(s3_server.endpoint, bucket, s3_server.access_key, s3_server.secret_key)
    with FakePictrs(store, api_key=PICTRS_KEY) as server:
        yield server


@pytest.fixture
def world(pictrs: FakePictrs) -> Iterator[LemmyWorld]:
    """Lemmy 0.19 with pict-rs behind it, an admin account for pictguard and two users."""
    with FakeLemmy(pictrs_url=pictrs.url, pictrs_api_key=PICTRS_KEY) as lemmy:
        yield LemmyWorld.create(lemmy)


@pytest.fixture
async def enforcer(
    env: Callable[..., Any], state: SqliteState
) -> AsyncIterator[Callable[..., Any]]:
    """Build and start an Enforcer from an ``enforce`` section; returns (enforcer, tap)."""
    started: list[Enforcer] = []

    async def _make(tootctl: Runner | None = None, **enforce: Any) -> tuple[Any, ...]:
        settings, bus, stores, tap = await env(**enforce)
        flow = None
        if tootctl is not None:  # as `tootctl media lookup` on the Mastodon host would answer
            flow = PlatformFlow(
                settings.enforce.platform,
                state,
                stores,
                Records(state),
                policy=settings.enforce.action_policy(),
                tootctl=tootctl,
            )
        made = Enforcer(bus, settings, stores, state, platform=flow)
        await made.start()
        started.append(made)
        return made, tap

    yield _make
    for made in started:
        await made.stop()
