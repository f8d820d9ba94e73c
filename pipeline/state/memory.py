"""An in-memory :class:`Table`, for caches that need not survive a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipeline.state.table import Table


class MemoryTable(Table):
    def __init__(self, name: str) -> None:
        self.name = name
        self._data: dict[str, bytes] = {}

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self._data[key] = value
        self._notify(key, value)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._notify(key, None)

    async def items(self) -> AsyncIterator[tuple[str, bytes]]:  # type: ignore[override]
        for key, value in list(self._data.items()):
            yield key, value
