"""The dynamic batcher: grouping, order, lanes, failure isolation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from classify.batcher import BatcherClosedError, DynamicBatcher
from pipeline.events import Lane


class Recorder:
    """A model stand-in that records its batches and can be held mid-call."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.entered.set()
        self.release.wait(5)
        if any(item < 0 for item in items):
            raise ValueError("negative input")
        self.batches.append(list(items))
        return [item * 10 for item in items]


@pytest.mark.asyncio
async def test_results_come_back_in_order_and_batched() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch=8, max_wait_ms=50)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    finally:
        await batcher.stop()
    assert results == [i * 10 for i in range(20)]
    assert max(len(b) for b in model.batches) == 8
    assert len(model.batches) < 20


@pytest.mark.asyncio
async def test_a_single_item_is_flushed_without_a_full_batch() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch=1000, max_wait_ms=1)
    await batcher.start()
    try:
        assert await asyncio.wait_for(batcher.submit(4), timeout=5) == 40
    finally:
        await batcher.stop()


@pytest.mark.asyncio
async def test_a_failing_item_does_not_fail_its_batch_mates() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch=8, max_wait_ms=100)
    await batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)
    assert batcher.stats.failed_calls >= 1


@pytest.mark.asyncio
async def test_sync_items_are_taken_before_bulk() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch=2, max_wait_ms=0)
    await batcher.start()
    try:
        model.release.clear()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(model.entered.wait, 5)  # batch [0] is now in the model
        bulk = [asyncio.create_task(batcher.submit(i, Lane.BULK)) for i in (1, 2)]
        await asyncio.sleep(0)
        sync = [asyncio.create_task(batcher.submit(i, Lane.SYNC)) for i in (101, 102)]
        await asyncio.sleep(0)
        model.release.set()
        await asyncio.gather(first, *bulk, *sync)
    finally:
        await batcher.stop()
    assert model.batches == [[0], [101, 102], [1, 2]]


@pytest.mark.asyncio
async def test_cancelled_callers_are_skipped() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch=4, max_wait_ms=0)
    await batcher.start()
    try:
        model.release.clear()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(model.entered.wait, 5)
        gone = asyncio.create_task(batcher.submit(5))
        kept = asyncio.create_task(batcher.submit(6))
        await asyncio.sleep(0)
        gone.cancel()
        model.release.set()
        assert await kept == 60
        await first
    finally:
        await batcher.stop()
    assert [5] not in model.batches and all(5 not in b for b in model.batches)


@pytest.mark.asyncio
async def test_submit_after_stop_fails_clearly() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch=2, max_wait_ms=0)
    await batcher.start()
    await batcher.stop()
    with pytest.raises(BatcherClosedError):
        await batcher.submit(1)
