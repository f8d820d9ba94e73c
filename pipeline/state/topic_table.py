"""A :class:`Table` backed by a compacted Kafka topic.

At start the whole topic is replayed into memory (compaction keeps it to one record per
key); afterwards a background task follows it, so a write by any replica (a hash added
with ``pictguard hashes add`` on an admin's laptop, a verdict cached by another classify
worker) reaches every replica. Writes go to the topic first and are applied locally once
acknowledged, so a reader never sees a value the log does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pipeline.bus.base import Bus, BusError, Consumer
from pipeline.state.table import Table

log = logging.getLogger(__name__)


class TopicTable(Table):
    """``max_entries`` bounds what this replica holds in memory: past it, the entries
    written longest ago are forgotten here (the topic keeps them). Only for tables where a
    forgotten entry costs work, not correctness, like the verdict cache."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        *,
        load_timeout_s: float = 60.0,
        max_entries: int | None = None,
    ) -> None:
        self.bus = bus
        self.name = topic
        self.load_timeout_s = load_timeout_s
        self.max_entries = max_entries
        self._echoes: dict[str, int] = {}  # our writes the follower has not read back yet
        self._data: dict[str, bytes] = {}
        self._consumer: Consumer | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return  # already loaded and followed (several owners may start one table)
        await self.bus.ensure_topics([self.name])
        consumer = self.bus.consumer([self.name], None, from_beginning=True)
        await consumer.start()
        self._consumer = consumer
        await self._load(consumer)
        self._follower = asyncio.create_task(self._follow(consumer), name=f"table:{self.name}")

    async def _load(self, consumer: Consumer) -> None:
        end_offsets = getattr(consumer, "end_offsets", None)
        if end_offsets is None:
            # In-process bus: history is already complete; drain what is there.
            while batch := await consumer.getmany(0, 10000):
                self._apply_batch(batch)
            return
        targets = await end_offsets()
        remaining = {tp for tp, end in targets.items() if end > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.load_timeout_s
        while remaining:
            if loop.time() > deadline:
                raise BusError(f"table topic {self.name} did not load in {self.load_timeout_s}s")
            batch = await consumer.getmany(500, 10000)
            self._apply_batch(batch)
            for m in batch:
                tp = (m.topic, m.partition)
                if tp in remaining and m.offset + 1 >= targets[tp]:
                    remaining.discard(tp)

    def _apply_batch(self, batch: list) -> None:  # type: ignore[type-arg]
        for m in batch:
            if m.key is None:
                continue
            key = m.key.decode()
            if self._own_echo(key):
                continue  # our own write coming back: applied and notified at put()
            if m.value:
                self._keep(key, m.value)
                self._notify(key, m.value)
            else:
                self._data.pop(key, None)
                self._notify(key, None)

    async def _follow(self, consumer: Consumer) -> None:
        while True:
            try:
                self._apply_batch(await consumer.getmany(1000, 10000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — keep following; the broker may return
                log.warning("following table %s failed, retrying: %s", self.name, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def put(self, key: str, value: bytes) -> None:
        await self._produce(key, value)
        self._keep(key, value)
        self._notify(key, value)

    def _keep(self, key: str, value: bytes) -> None:
        if self.max_entries is None:
            self._data[key] = value
            return
        self._data.pop(key, None)  # a rewrite counts as new: dicts keep insertion order
        self._data[key] = value
        while len(self._data) > self.max_entries:
            del self._data[next(iter(self._data))]

    async def delete(self, key: str) -> None:
        await self._produce(key, None)
        self._data.pop(key, None)
        self._notify(key, None)

    async def _produce(self, key: str, value: bytes | None) -> None:
        """Write to the topic. The follower will read the write back; that echo must not
        count as a newer write (with ``max_entries`` it would bring back what the bound had
        just evicted). The echo is expected before the write goes out, as the follower may
        read it before the acknowledgement arrives."""
        following = self._follower is not None
        if following:
            self._echoes[key] = self._echoes.get(key, 0) + 1
        try:
            await self.bus.produce(self.name, value, key=key.encode())
        except BaseException:
            if following:
                self._own_echo(key)
            raise

    def _own_echo(self, key: str) -> bool:
        left = self._echoes.get(key, 0)
        if not left:
            return False
        if left == 1:
            del self._echoes[key]
        else:
            self._echoes[key] = left - 1
        return True

    async def items(self) -> AsyncIterator[tuple[str, bytes]]:  # type: ignore[override]
        for key, value in list(self._data.items()):
            yield key, value
