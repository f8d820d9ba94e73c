"""SQLite tables: a change made by another process reaches a running one; lookups are quick."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.state.sqlite import SqliteState, StateError


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


async def test_lookups_skip_the_reader_thread_and_never_wait_for_a_writer(
    tmp_path: Path,
) -> None:
    """An upload's verdict-cache lookup is answered while the reader thread is busy (a
    backfill's large read, say) and while another connection holds a write open."""
    state = SqliteState(tmp_path / "s.db")
    await state.start()
    table = state.table("verdict_cache")
    await table.put("k", b"old")
    busy = threading.Event()
    reader_busy = asyncio.get_running_loop().run_in_executor(state._read_executor, busy.wait, 10)
    writer = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE kv SET value = ? WHERE key = ?", (b"new", "k"))
        assert await asyncio.wait_for(table.get("k"), 1.0) == b"old"  # the last committed
        writer.execute("COMMIT")
        assert await asyncio.wait_for(table.get("k"), 1.0) == b"new"  # a fresh snapshot
    finally:
        busy.set()
        await reader_busy
        writer.close()
    # A lookup the inline connection cannot run goes to the reader thread, whose failure
    # is the usual StateError telling the admin what to check.
    with pytest.raises(StateError, match="no such table"):
        await state.lookup("SELECT value FROM missing WHERE key = ?", ("k",))
    await state.stop()
