"""A small key-value table abstraction over the two state backends.

Hash lists and the verdict cache are tables. In single-process mode a table is a SQLite
table (:class:`pipeline.state.sqlite.SqliteTable`); distributed, it is a compacted Kafka
topic replayed into memory at start and followed afterwards
(:class:`pipeline.state.topic_table.TopicTable`). Values are bytes; callers encode JSON.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable


class Table(abc.ABC):
    """Keyed bytes with get/put/delete and a full scan."""

    name: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Load or open the table; after this, reads see every write made before."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def items(self) -> AsyncIterator[tuple[str, bytes]]: ...

    def subscribe(self, callback: Callable[[str, bytes | None], None]) -> None:
        """Call ``callback(key, value_or_None)`` on every change seen after this call.

        Changes made by other processes are seen only by backends that follow a shared log
        (Kafka); the SQLite backend reports the changes made through this object.
        """
        self._listeners.append(callback)

    @property
    def _listeners(self) -> list[Callable[[str, bytes | None], None]]:
        listeners: list[Callable[[str, bytes | None], None]] | None = getattr(
            self, "_listeners_list", None
        )
        if listeners is None:
            listeners = []
            self._listeners_list = listeners
        return listeners

    def _notify(self, key: str, value: bytes | None) -> None:
        for callback in self._listeners:
            callback(key, value)
