"""The bus contract every stage is written against.

Two implementations honour it: :class:`pipeline.bus.kafka.KafkaBus` (aiokafka) and
:class:`pipeline.bus.memory.MemoryBus` (in-process). The delivery rule is the same on both:
a consumer commits a message only after everything its handler produced is acknowledged.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.errors import PictguardError


@dataclass(frozen=True, slots=True)
class Message:
    """One record read from a topic; a tombstone (deleted key) has an empty value."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce; ``value=None`` writes a tombstone on compacted topics."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class BusError(PictguardError, RuntimeError):
    """The bus cannot be reached or refused an operation; the message says what to check."""


class BusUnavailable(BusError):
    """The broker did not answer in time or the connection failed: worth retrying."""


class Consumer(abc.ABC):
    """A member of a consumer group reading some topics."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def getmany(self, timeout_ms: int, max_records: int) -> list[Message]:
        """Up to ``max_records`` messages, waiting at most ``timeout_ms`` for the first."""

    @abc.abstractmethod
    async def commit(self, messages: Sequence[Message]) -> None:
        """Mark ``messages`` (and everything before them in their partitions) done."""

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end per assigned (topic, partition), for metrics; {} if unknown."""
        return {}

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Bus(abc.ABC):
    """Produce to topics and create consumers. Topic names here are full names."""

    #: ``messaging.system`` of this bus's trace spans.
    system: ClassVar[str] = "in_process"

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        """Produce ``records`` and return once every one is acknowledged."""

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await self.produce_many([Outgoing(topic, value, key, headers or {})])

    @abc.abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        group_id: str | None,
        *,
        from_beginning: bool = False,
        low_latency: bool = False,
    ) -> Consumer:
        """A consumer for ``topics``; ``group_id=None`` reads without a group (tables).

        ``low_latency`` asks the broker to answer fetches at once rather than wait to fill
        them: for the sync lane and reply topics, where a person's upload is waiting.
        """

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Make sure ``topics`` exist (no-op where topics need no creation)."""

    async def drop_topics(self, topics: Sequence[str]) -> None:  # noqa: B027 — optional
        """Delete ``topics`` (per-replica reply topics on shutdown); default: nothing to do."""

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
