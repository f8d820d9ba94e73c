"""SQLite tables: a change made by another process reaches a running one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.state.sqlite import SqliteState


async def test_changes_from_another_connection_are_followed(tmp_path: Path) -> None:
    running, admin = SqliteState(tmp_path / "s.db"), SqliteState(tmp_path / "s.db")
    await running.start()
    await admin.start()
    table = running.table("hashlists")
    table.poll_s = 0.05
    seen: list[tuple[str, bytes | None]] = []
    table.subscribe(lambda k, v: seen.append((k, v)))
    await table.start()
    try:
        other = admin.table("hashlists")
        await other.put("a", b"1")
        await other.put("b", b"2")
        await other.delete("a")
        for _ in range(100):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.02)
        assert seen == [("b", b"2"), ("a", None)]  # latest state per key, in write order
        assert await table.get("a") is None and await table.get("b") == b"2"
        assert [k async for k, _ in table.items()] == ["b"]
    finally:
        await table.stop()
        await running.stop()
        await admin.stop()
