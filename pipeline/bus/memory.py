"""In-process bus for single-process mode: bounded queues, back-pressure, same contract.

Each topic keeps one bounded queue per consumer group. A producer waits while any group's
queue is full, which is the back-pressure a slow classify puts on a fast listing. Messages
produced before any group subscribed wait in the topic (also bounded) and go to the first
group that subscribes, as a Kafka consumer with ``auto_offset_reset=earliest`` would see
them. A consumer that stops with messages it took but did not commit hands them back to
its group, as a Kafka group redelivers uncommitted offsets. Groupless consumers (tables)
read a topic's full history from the start.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from pipeline.bus.base import Bus, Consumer, Message, Outgoing
from pipeline.tracing import producing


class _Group:
    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(capacity)
        self.redeliver: deque[Message] = deque()
        self.arrived = asyncio.Event()

    def size(self) -> int:
        return self.queue.qsize() + len(self.redeliver)


class _Topic:
    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.groups: dict[str, _Group] = {}
        self.pending: _Group | None = _Group(capacity)
        self.history: list[Message] | None = None  # kept only for topics read without a group
        self.offset = 0
        self.readers: list[_GrouplessConsumer] = []

    def group(self, name: str) -> _Group:
        group = self.groups.get(name)
        if group is None:
            if self.pending is not None:
                group, self.pending = self.pending, None
            else:
                group = _Group(self.capacity)
            self.groups[name] = group
        return group

    async def put(self, message: Message) -> None:
        if self.history is not None:
            self.history.append(message)
            for reader in self.readers:
                reader.wake.set()
        targets = list(self.groups.values()) or ([self.pending] if self.pending else [])
        for group in targets:
            await group.queue.put(message)
            group.arrived.set()


class MemoryBus(Bus):
    """The in-process bus. ``capacity`` bounds every queue."""

    def __init__(self, capacity: int = 1024, *, table_topics: Sequence[str] = ()) -> None:
        self.capacity = capacity
        self._topics: dict[str, _Topic] = {}
        self._table_topics = set(table_topics)

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = _Topic(name, self.capacity)
            if name in self._table_topics:
                topic.history = []
            self._topics[name] = topic
        return topic

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for name in topics:
            self._topic(name)

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        with producing(records, self.system) as traced:
            for record in traced:
                topic = self._topic(record.topic)
                message = Message(
                    topic=record.topic,
                    value=record.value if record.value is not None else b"",
                    key=record.key,
                    headers=dict(record.headers),
                    offset=topic.offset,
                    timestamp_ms=int(time.time() * 1000),
                )
                topic.offset += 1
                await topic.put(message)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str | None,
        *,
        from_beginning: bool = False,
        low_latency: bool = False,
    ) -> Consumer:
        if group_id is None:
            return _GrouplessConsumer(self, list(topics))
        return _GroupConsumer(self, list(topics), group_id)

    def backlog(self, topic: str) -> int:
        """Messages waiting in ``topic`` across its groups (for progress and tests)."""
        t = self._topics.get(topic)
        if t is None:
            return 0
        groups = list(t.groups.values()) + ([t.pending] if t.pending else [])
        return sum(g.size() for g in groups)


class _GroupConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: list[str], group: str) -> None:
        self._bus = bus
        self._topics = topics
        self._group_name = group
        self._groups: list[_Group] = []
        self._taken: dict[int, tuple[_Group, Message]] = {}
        self._next = 0

    async def start(self) -> None:
        self._groups = [self._bus._topic(t).group(self._group_name) for t in self._topics]

    async def stop(self) -> None:
        # Hand back what was taken but never committed, in its original order.
        for group, message in sorted(self._taken.values(), key=lambda t: -t[1].offset):
            group.redeliver.appendleft(message)
            group.arrived.set()
        self._taken.clear()

    def _take(self, max_records: int) -> list[Message]:
        batch: list[Message] = []
        n = len(self._groups)
        # Round-robin over topics so one busy topic cannot starve another.
        for i in range(n):
            group = self._groups[(self._next + i) % n]
            while len(batch) < max_records and group.redeliver:
                message = group.redeliver.popleft()
                batch.append(message)
                self._taken[id(message)] = (group, message)
            while len(batch) < max_records and not group.queue.empty():
                message = group.queue.get_nowait()
                batch.append(message)
                self._taken[id(message)] = (group, message)
        self._next += 1
        return batch

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Message]:
        batch = self._take(max_records)
        if batch or timeout_ms <= 0:
            return batch
        for group in self._groups:
            group.arrived.clear()
        waiters = [asyncio.ensure_future(g.arrived.wait()) for g in self._groups]
        try:
            await asyncio.wait(
                waiters, timeout=timeout_ms / 1000, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._take(max_records)

    async def commit(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self._taken.pop(id(message), None)

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages waiting for this group per topic (one partition, numbered 0)."""
        return {
            (topic, 0): group.size()
            for topic, group in zip(self._topics, self._groups, strict=True)
        }


class _GrouplessConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: list[str]) -> None:
        self._bus = bus
        self._topics = [bus._topic(t) for t in topics]
        self._positions = [0] * len(topics)
        self.wake = asyncio.Event()

    async def start(self) -> None:
        for topic in self._topics:
            if topic.history is None:
                topic.history = []
            topic.readers.append(self)

    async def stop(self) -> None:
        for topic in self._topics:
            if self in topic.readers:
                topic.readers.remove(self)

    def _take(self, max_records: int) -> list[Message]:
        batch: list[Message] = []
        for i, topic in enumerate(self._topics):
            history = topic.history or []
            while self._positions[i] < len(history) and len(batch) < max_records:
                batch.append(history[self._positions[i]])
                self._positions[i] += 1
        return batch

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Message]:
        batch = self._take(max_records)
        if batch or timeout_ms <= 0:
            return batch
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout_ms / 1000)
        except TimeoutError:
            return []
        return self._take(max_records)

    async def commit(self, messages: Sequence[Message]) -> None:
        """Groupless readers keep their position in memory."""
