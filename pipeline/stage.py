"""What every consuming stage shares: the poll–handle–commit loop and dead-lettering.

A stage is a plain object with ``async handle(batch)``. :func:`consume` reads a batch,
awaits the handler (which produces its outputs and waits for their acknowledgement), then
commits. A stop request (SIGTERM) lets the batch in hand finish and be committed before
the loop returns, so nothing is lost and nothing is processed twice by a clean restart.

While the broker is unreachable (:class:`~pipeline.bus.base.BusUnavailable`) the loop does not
end: it handles the same batch again with backoff until the bus takes its output, so a
role outlives a broker outage and commits nothing it did not deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from pipeline import metrics
from pipeline.bus.base import Bus, BusUnavailable, Consumer, Message
from pipeline.errors import PictguardError
from pipeline.events import DeadLetter, SchemaError, _Event, decode, encode
from pipeline.retry import Stopped, pause, retrying
from pipeline.tracing import consuming, continued, inject_headers

# Lag is sampled this often per consumer (a ListOffsets request to the broker each time).
LAG_INTERVAL_S = 15.0
_LAG_TIMEOUT_S = 5.0
# The last sample, on the way out, must not hold up a shutdown when the broker is gone.
_FINAL_LAG_TIMEOUT_S = 1.0
# Backoff while the bus cannot take a batch's output (or deliver the next batch).
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0

log = logging.getLogger(__name__)
E = TypeVar("E", bound=_Event)


class Abandoned(PictguardError):
    """A handler gave up its batch at a stop (its work can no longer finish, e.g. remote
    workers' leases): the batch is left uncommitted for the group's next consumer."""


class BatchHandler(Protocol):
    async def handle(self, batch: Sequence[Message]) -> None: ...


async def consume(
    bus: Bus,
    topics: Sequence[str],
    group_id: str,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    max_records: int = 256,
    poll_ms: int = 200,
    started: asyncio.Event | None = None,
    lag_interval_s: float = LAG_INTERVAL_S,
    max_inflight: int = 1,
    low_latency: bool = False,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``handler`` over ``topics`` as a member of ``group_id`` until ``stop`` is set.

    With ``max_inflight`` > 1 up to that many batches are handled at once (for stages whose
    handling is idempotent per message, like classify): the next batch is fetched while the
    current one waits on the model, and offsets are still committed strictly in order, a
    batch only after every batch before it is done.

    The consumer's lag per partition goes to the ``pictguard_consumer_lag`` gauge every
    ``lag_interval_s`` and once more when the loop ends.

    ``gate``, when given, is awaited before every fetch: a handler that can only pass work
    on (remote workers) takes messages off the bus only while someone wants them, and
    leaves them to the group's other members meanwhile.
    """
    consumer = bus.consumer(topics, group_id, low_latency=low_latency)
    await consumer.start()
    if started is not None:
        started.set()
    sampler = asyncio.create_task(_watch_lag(consumer, group_id, stop, lag_interval_s))
    try:
        if max_inflight <= 1:
            while not stop.is_set():
                batch = await _fetch(consumer, group_id, stop, poll_ms, max_records, gate)
                if not batch:
                    continue
                if not await _handle(handler, batch, group_id, stop):
                    break  # stopped while the bus was down: leave the batch uncommitted
                await consumer.commit(batch)
        else:
            await _pipelined(
                consumer, handler, group_id, stop, max_records, poll_ms, max_inflight, gate
            )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await _sample_lag(consumer, group_id, _FINAL_LAG_TIMEOUT_S)
        await consumer.stop()


async def _passed(gate: Callable[[], Awaitable[None]], stop: asyncio.Event) -> bool:
    """Wait for ``gate`` unless ``stop`` comes first; True if the gate opened."""
    opened = asyncio.ensure_future(gate())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({opened, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (opened, stopped):
            waiter.cancel()
        await asyncio.gather(opened, stopped, return_exceptions=True)
    return opened.done() and not opened.cancelled() and opened.exception() is None


def bus_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every error grouped in it) means the bus could not be reached."""
    if isinstance(exc, BaseExceptionGroup):
        return all(bus_unavailable(e) for e in exc.exceptions)
    return isinstance(exc, BusUnavailable)


async def _fetch(
    consumer: Consumer,
    group_id: str,
    stop: asyncio.Event,
    poll_ms: int,
    max_records: int,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> list[Message]:
    """The next batch; an unreachable broker is waited out (empty batches meanwhile)."""
    if gate is not None and not await _passed(gate, stop):
        return []
    try:
        return await consumer.getmany(poll_ms, max_records)
    except BusUnavailable as exc:
        log.warning("%s: %s; retrying in %.1f s", group_id, exc, RETRY_FIRST_S)
        await pause(stop, RETRY_FIRST_S)
        return []


async def _handle(
    handler: BatchHandler, batch: Sequence[Message], group_id: str, stop: asyncio.Event
) -> bool:
    """Handle ``batch``, again and again with backoff while the bus cannot take its output.

    Every stage is idempotent per message (a repeat becomes a duplicate downstream), so a
    batch whose output was partly acknowledged is simply handled again whole. False when
    ``stop`` came first: the batch is then left uncommitted for the next consumer.
    """

    def again(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning(
            "%s: the bus did not take the output of %d messages (attempt %d: %s); "
            "handling them again in %.1f s",
            group_id,
            len(batch),
            attempt,
            exc,
            delay,
        )

    try:
        async for attempt in retrying(
            bus_unavailable, first_s=RETRY_FIRST_S, max_s=RETRY_MAX_S, stop=stop, on_retry=again
        ):
            with attempt:
                await handler.handle(batch)
    except (Stopped, Abandoned):
        return False
    return True


class Committer:
    """Commits in the background, one commit at a time, coalescing what finished meanwhile.

    A commit is a broker round trip; awaited inline it holds up the next fetch (or, for a
    reply listener, the replies already fetched). Offsets still only move forward in the
    order batches were added, and :meth:`close` waits for everything added to be committed.
    """

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self._waiting: list[Message] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, messages: Sequence[Message]) -> None:
        self._waiting.extend(messages)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="commit")

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            await self.consumer.commit(batch)

    async def close(self) -> None:
        """Wait until every added message is committed."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        if self._waiting:
            await self._run()


async def listen(
    consumer: Consumer,
    system: str,
    resolve: Callable[[Message], None],
    *,
    what: str,
    poll_ms: int,
) -> None:
    """Read ``consumer`` until cancelled, ``resolve`` each message inside its trace, and
    commit beside the reading (a reply never waits for a broker round trip).

    For reply listeners (the API's verdict replies, the admin CLI's replies): a failed
    fetch is logged ("reading ``what`` failed") and retried, as the broker may return.
    """
    committer = Committer(consumer)
    while True:
        try:
            batch = await consumer.getmany(200, poll_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — keep listening; the broker may return
            log.warning("reading %s failed, retrying: %s", what, exc)
            await asyncio.sleep(0.5)
            continue
        for message in batch:
            with consuming(message, system):
                resolve(message)
        if batch:
            committer.add(batch)


async def _pipelined(
    consumer: Consumer,
    handler: BatchHandler,
    group_id: str,
    stop: asyncio.Event,
    max_records: int,
    poll_ms: int,
    max_inflight: int,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> None:
    inflight: deque[tuple[Sequence[Message], asyncio.Task[bool]]] = deque()
    fetch: asyncio.Task[list[Message]] | None = None
    committer = Committer(consumer)
    try:
        while not (stop.is_set() and not inflight):
            if fetch is None and len(inflight) < max_inflight and not stop.is_set():
                fetch = asyncio.create_task(
                    _fetch(consumer, group_id, stop, poll_ms, max_records, gate)
                )
            waiting: set[asyncio.Future[Any]] = {inflight[0][1]} if inflight else set()
            if fetch is not None:
                waiting.add(fetch)
            if not waiting:
                break
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if fetch is not None and fetch.done():
                fetched, fetch = fetch.result(), None
                if fetched:
                    task = asyncio.create_task(_handle(handler, fetched, group_id, stop))
                    inflight.append((fetched, task))
            # Commit the finished prefix, in order; a failed batch stops the loop uncommitted,
            # and so does one given up at a stop (a later commit would cover it).
            while inflight and inflight[0][1].done():
                done, task = inflight.popleft()
                if not task.result():
                    return
                committer.add(done)
    finally:
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
        for _, task in inflight:
            task.cancel()
        await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
        await committer.close()


async def _sample_lag(consumer: Consumer, group_id: str, timeout_s: float = _LAG_TIMEOUT_S) -> None:
    try:
        lags = await asyncio.wait_for(consumer.lag(), timeout_s)
    except Exception as exc:  # noqa: BLE001 — a metric must never stop the consumer
        # Mid-rebalance a partition can vanish between the two requests; next time then.
        log.debug("lag of %s not sampled: %r", group_id, exc)
        return
    metrics.set_consumer_lag(group_id, lags)


async def _watch_lag(
    consumer: Consumer, group_id: str, stop: asyncio.Event, interval_s: float
) -> None:
    while not stop.is_set():
        await _sample_lag(consumer, group_id)
        await pause(stop, interval_s)


async def dead_letter(
    bus: Bus, topic: str, message: Message, reason: str, detail: str, *, stage: str = "pipeline"
) -> None:
    """Keep ``message`` in the dead-letter topic with why it could not be processed."""
    record = DeadLetter(
        source_topic=message.topic,
        source_key=message.key.decode(errors="replace") if message.key else None,
        partition=message.partition,
        offset=message.offset,
        reason=reason,
        detail=detail,
        payload=message.value[:65536],
    )
    log.warning(
        "dead-lettered a message from %s (partition %s offset %s): %s: %s",
        message.topic,
        message.partition,
        message.offset,
        reason,
        detail,
    )
    # The record stays in the message's trace, so an admin finds where it came from.
    with continued(message.headers):
        headers = inject_headers()
    await bus.produce(topic, encode(record), key=record.key.encode(), headers=headers)
    metrics.record_error(stage, reason)


async def decode_or_dead_letter(
    bus: Bus, dead_letter_topic: str, message: Message, model: type[E], *, stage: str = "pipeline"
) -> E | None:
    """Decode ``message`` as ``model``; dead-letter it and return None if it is not one."""
    try:
        return decode(message.value, model)
    except SchemaError as exc:
        await dead_letter(bus, dead_letter_topic, message, "malformed_event", str(exc), stage=stage)
        return None
