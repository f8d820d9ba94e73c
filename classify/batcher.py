"""Dynamic batching: many concurrent single-item requests → few model calls.

A batch closes when it holds ``max_batch`` items or ``max_wait_ms`` after its first item
arrived, whichever comes first. Items of the sync lane are taken before bulk items, so a
waiting upload never queues behind a backfill. The model function runs in its own thread:
while it works on one batch, the event loop keeps decoding and queueing the next one.
If a batch call fails, its items are retried one by one so that only the item that breaks
the model gets the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry.trace import Link, SpanContext

from pipeline import metrics
from pipeline.errors import PictguardError
from pipeline.events import Lane
from pipeline.tracing import ROOT, current_span_context, link_current, span

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosedError(PictguardError, RuntimeError):
    """An item was submitted to a batcher that is not running."""


@dataclass(slots=True)
class BatchStats:
    """Counters a benchmark or a test can read."""

    calls: int = 0
    items: int = 0
    failed_calls: int = 0
    sizes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued_at: float
    # With tracing on: the submitter's span (the batch links to it) and the batch's span.
    member: SpanContext | None = None
    batch: SpanContext | None = None


class DynamicBatcher(Generic[In, Out]):
    """Group concurrent :meth:`submit` calls into calls of ``fn(items) -> results``.

    ``fn`` is blocking and returns one result per item, in order. It always runs in the
    batcher's own single thread, so a model object is never used by two threads at once.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_batch: int,
        max_wait_ms: float,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self.stats = BatchStats()
        self._queues: dict[Lane, deque[_Pending[In, Out]]] = {
            Lane.SYNC: deque(),
            Lane.BULK: deque(),
        }
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the batching loop (idempotent)."""
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-loop")

    async def stop(self) -> None:
        """Stop the loop; pending items fail with :class:`BatcherClosedError`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            while queue:
                pending = queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError(f"{self.name} stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def submit(self, item: In, lane: Lane = Lane.BULK) -> Out:
        """Queue ``item`` and wait for its result (or the exception it caused)."""
        if self._task is None or self._wakeup is None:
            raise BatcherClosedError(f"{self.name} is not started")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future, time.monotonic(), current_span_context())
        self._queues[lane].append(pending)
        self._wakeup.set()
        try:
            return await future
        finally:
            link_current(pending.batch)  # and back from the member to its batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not len(self):
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(loop)
            batch = self._take()
            if batch:
                await self._call(loop, batch)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a batch is full or the oldest item has waited ``max_wait``."""
        assert self._wakeup is not None
        while len(self) < self.max_batch:
            oldest = min(q[0].queued_at for q in self._queues.values() if q)
            remaining = oldest + self.max_wait - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending[In, Out]]:
        batch: list[_Pending[In, Out]] = []
        for lane in (Lane.SYNC, Lane.BULK):
            queue = self._queues[lane]
            while queue and len(batch) < self.max_batch:
                pending = queue.popleft()
                if not pending.future.done():  # the caller may have given up (cancelled)
                    batch.append(pending)
        return batch

    async def _call(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[In, Out]]) -> None:
        # The batch serves many requests, each in its own trace: its span is a root linked
        # to every member's span.
        links = [Link(p.member) for p in batch if p.member is not None]
        with span(
            f"{self.name} batch",
            context=ROOT,
            links=links,
            attributes={"pictguard.batcher": self.name, "pictguard.batch.size": len(batch)},
        ) as batch_span:
            batch_context = batch_span.get_span_context()
            if batch_context.is_valid:
                for pending in batch:
                    pending.batch = batch_context
            await self._call_in_span(loop, batch)

    async def _call_in_span(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[In, Out]]
    ) -> None:
        items = [pending.item for pending in batch]
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.sizes.append(len(items))
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._checked_call, items)
        except Exception as exc:  # noqa: BLE001 — a model's failure goes to its callers
            metrics.record_model_batch(
                self.name, len(items), time.perf_counter() - started, failed=True
            )
            self.stats.failed_calls += 1
            if len(batch) == 1:
                _settle_error(batch[0].future, exc)
                return
            log.warning(
                "batch call failed; retrying its items one by one",
                extra={"batcher": self.name, "size": len(batch), "error": repr(exc)},
            )
            for pending in batch:
                try:
                    single = await loop.run_in_executor(
                        self._executor, self._checked_call, [pending.item]
                    )
                except Exception as item_exc:  # noqa: BLE001 — to this item's caller
                    _settle_error(pending.future, item_exc)
                else:
                    _settle(pending.future, single[0])
            return
        metrics.record_model_batch(self.name, len(items), time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            _settle(pending.future, result)

    def _checked_call(self, items: list[In]) -> Sequence[Out]:
        results = self.fn(items)
        if len(results) != len(items):
            raise RuntimeError(
                f"{self.name}: model returned {len(results)} results for {len(items)} items"
            )
        return results


def _settle(future: asyncio.Future[Out], result: Out) -> None:
    if not future.done():
        future.set_result(result)


def _settle_error(future: asyncio.Future[Out], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
