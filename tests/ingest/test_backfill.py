"""Backfill hardening: parallel prefixes that resume after a crash, pacing, --since, ETA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.backfill import Backfill, checkpoint_name, split_location
from ingest.pacing import Progress, RateLimiter
from pictguard.settings import Settings
from pipeline.bus.memory import MemoryBus
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores, parse_location
from pipeline.timeparse import parse_since
from tests.ingest.helpers import make_settings, put_objects
from tests.servers import S3Server


@pytest.fixture
def local(s3_server: S3Server, topic_prefix: str, tmp_path: Path) -> Settings:
    """Single-process settings (no broker): the in-process bus, SQLite checkpoints."""
    settings = make_settings(None, s3_server, topic_prefix, tmp_path)
    settings.ingest.batch_size = 5
    settings.ingest.checkpoint_every = 5
    return settings


@pytest.fixture
async def state(local: Settings) -> AsyncIterator[SqliteState]:
    s = SqliteState(local.storage.state_file)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def stores(local: Settings) -> AsyncIterator[Stores]:
    s = Stores(local.s3)
    yield s
    await s.close()


def test_split_location_drops_nested_prefixes() -> None:
    base = parse_location("s3://pics/media/")
    parts = split_location(base, ["b/", "a/", "a/x/", "b/"])
    assert [p.prefix for p in parts] == ["media/a/", "media/b/"]
    assert split_location(base, []) == [base]


async def test_parallel_prefixes_resume_after_a_crash_without_repeats(
    local: Settings, state: SqliteState, stores: Stores, s3_server: S3Server, bucket: str
) -> None:
    keys = [f"{d}/{i:03d}.jpg" for d in ("aa", "bb", "cc") for i in range(12)]
    put_objects(s3_server, bucket, [*keys, "zz/skipped.jpg"])
    location = parse_location(f"s3://{bucket}")
    bus = MemoryBus(capacity=1000)
    consumer = bus.consumer([local.topic("scan-requests.bulk")], "g")
    await consumer.start()
    stop = asyncio.Event()
    produced: list[int] = []

    def crash_after_15(n: int) -> None:
        produced.append(n)
        if sum(produced) >= 15:
            stop.set()  # as if the process were killed after these were acknowledged

    prefixes = ["aa/", "bb/", "cc/"]
    store = stores.for_location(location)
    first = await Backfill(
        bus,
        local,
        store,
        location,
        state,
        prefixes=prefixes,
        parallel=2,
        on_produced=crash_after_15,
    ).run(stop)
    assert not first.completed
    second = await Backfill(bus, local, store, location, state, prefixes=prefixes).run()
    assert second.completed
    for part in split_location(location, prefixes):  # all done: checkpoints and marks cleared
        assert await state.get_checkpoint(checkpoint_name(part)) is None
        assert await state.get_checkpoint(checkpoint_name(part) + "#done") is None

    got = await consumer.getmany(0, 1000)
    seen = [m.key.decode() for m in got if m.key]
    assert sorted(seen) == sorted(f"s3://{bucket}/{k}" for k in keys)  # each once, zz/ not


async def test_a_finished_prefix_is_not_listed_again_on_resume(
    local: Settings, state: SqliteState, stores: Stores, s3_server: S3Server, bucket: str
) -> None:
    put_objects(s3_server, bucket, ["aa/1.jpg", "bb/1.jpg"])
    location = parse_location(f"s3://{bucket}")
    aa, _ = split_location(location, ["aa/", "bb/"])
    await state.set_checkpoint(checkpoint_name(aa) + "#done", "1")  # an earlier run did aa/
    bus = MemoryBus()
    result = await Backfill(
        bus, local, stores.for_location(location), location, state, prefixes=["aa/", "bb/"]
    ).run()
    assert (result.completed, result.parts_done_before, result.produced) == (True, 1, 1)


async def test_since_and_progress_with_total_and_eta(
    local: Settings, state: SqliteState, stores: Stores, s3_server: S3Server, bucket: str
) -> None:
    put_objects(s3_server, bucket, [f"k{i}.jpg" for i in range(7)] + ["notes.txt"])
    local.ingest.extensions = [".jpg"]
    location = parse_location(f"s3://{bucket}")
    store = stores.for_location(location)
    seen: list[Progress] = []
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    nothing = await Backfill(MemoryBus(), local, store, location, state, since=tomorrow).run()
    assert (nothing.produced, nothing.too_old, nothing.completed) == (0, 8, True)

    backfill = Backfill(
        MemoryBus(),
        local,
        store,
        location,
        state,
        since=parse_since("1d"),
        on_progress=seen.append,
        estimate_total=False,  # the run's own estimate must not be what makes the total exact
    )
    # The keys-only estimate counts what the filters admit.
    await backfill._count([location], {}, asyncio.Event())
    assert (backfill.progress.total, backfill.progress.counted) == (7, True)
    # A finished run reports the exact total, however far its own estimate got.
    result = await backfill.run()
    assert (result.produced, result.filtered, result.too_old) == (7, 1, 0)
    final = seen[-1]
    assert final.total == 7 and final.counted and final.produced == 7
    assert final.eta_s == 0


async def test_rate_limiter_paces_without_real_waiting() -> None:
    clock = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(10, clock=lambda: clock[0], sleep=fake_sleep)
    assert limiter.batch_size(256) == 10
    for _ in range(5):
        await limiter.acquire(10)  # 50 objects at 10/s: the first 10 go at once
    assert sum(slept) == pytest.approx(4.0)
    clock[0] += 100  # a long pause refills only up to the burst
    before = sum(slept)
    await limiter.acquire(10)
    await limiter.acquire(5)
    assert sum(slept) - before == pytest.approx(0.5)
