"""Tables more than one role reads, opened once per process by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.state.table import Table


@dataclass(slots=True)
class SharedTables:
    """Hash lists (classify, enforce and the API read them) and the verdict cache (classify
    writes it, the API reads it): SQLite tables in one process, compacted topics when
    distributed."""

    hashlists: Table
    verdict_cache: Table

    async def start(self) -> None:
        await self.hashlists.start()
        await self.verdict_cache.start()

    async def stop(self) -> None:
        await self.verdict_cache.stop()
        await self.hashlists.stop()
