"""SQLite state: checkpoints, dead letters and key-value tables, in one file.

Roles that keep tables of their own here (enforce's verdicts and actions) create them
themselves and are the only ones to query them.

One connection, used from one dedicated thread, so SQLite work never blocks the event loop
and never needs its own locking. WAL mode keeps readers (``pictguard audit``) out of the
writers' way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import PictguardError
from pipeline.events import DeadLetter
from pipeline.state.table import Table

T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tbl TEXT NOT NULL, key TEXT NOT NULL, value BLOB, seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, key)
);
CREATE INDEX IF NOT EXISTS kv_seq ON kv (tbl, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source_topic TEXT NOT NULL, source_key TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
);
"""


# How long an inline lookup may wait for a busy file before it moves to the reader thread.
_INLINE_BUSY_MS = 20


class StateError(PictguardError, RuntimeError):
    """The state directory cannot be used (permissions, disk full, corrupt file)."""


def _failed(path: Path, exc: sqlite3.Error) -> StateError:
    """The error for an admin: what failed on which file, and what to do about it."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "full" in str(exc):
        hint = (
            f"free space on the disk of {path.parent}, or point PICTGUARD_STORAGE__STATE_DIR "
            "at a larger volume; the work not recorded is done again on the next start"
        )
    else:
        hint = "check that PICTGUARD_STORAGE__STATE_DIR is writable and the disk is healthy"
    return StateError(f"state file {path}: {exc} — {hint}")


class SqliteState:
    """The single-process state file (``<state_dir>/pictguard.sqlite3``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # Reads get a connection and thread of their own: in WAL mode they never wait for a
        # write, so an upload's verdict-cache lookup is not queued behind the audit inserts.
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-r")
        self._reader: sqlite3.Connection | None = None
        # Point lookups on a latency path (the verdict cache, once or twice per upload) run
        # on the caller's thread: an indexed read of one row takes tens of microseconds, a
        # hop to a worker thread and back costs more, and under load it queues behind the
        # other reads and waits for the GIL (it was most of an upload's overhead).
        self._inline: sqlite3.Connection | None = None
        self._tables: list[SqliteTable] = []

    async def start(self) -> None:
        if self._conn is None:
            await self._run(self._open)
            loop = asyncio.get_running_loop()
            self._reader = await loop.run_in_executor(self._read_executor, self._open_reader)
            # A reader in WAL mode never waits for the writer; the short timeout only bounds
            # the rare wait (WAL recovery after a crash) before falling back to the thread.
            self._inline = self._open_reader(busy_timeout_ms=_INLINE_BUSY_MS)

    def _open_reader(self, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
        try:
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            reader.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {self.path} for reading: {exc}") from exc
        return reader

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(
                f"cannot open state file {self.path}: {exc} — check PICTGUARD_STORAGE__STATE_DIR "
                "points to a writable folder with free space"
            ) from exc
        self._conn = conn

    async def stop(self) -> None:
        # Tables follow the file; they stop before it closes, whoever forgot to stop them.
        for table in self._tables:
            await table.stop()
        loop = asyncio.get_running_loop()
        if self._inline is not None:
            inline, self._inline = self._inline, None
            inline.close()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await loop.run_in_executor(self._read_executor, reader.close)
        self._read_executor.shutdown(wait=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _checked(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError("state store used before start()")
        return self._conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        def run() -> None:
            try:
                self._checked().execute(sql, params)
            except sqlite3.OperationalError as exc:
                raise _failed(self.path, exc) from exc

        await self._run(run)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        def run() -> None:
            conn = self._checked()
            try:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # SQLite may have rolled back already (a full disk does): no second error.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise _failed(self.path, exc) from exc

        await self._run(run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._reader is None:
                raise StateError("state store used before start()")
            try:
                return fn(self._reader)
            except sqlite3.OperationalError as exc:
                raise _failed(self.path, exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._read_executor, run)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())

    async def lookup(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """One row by an indexed key, read on the caller's thread (see ``_inline``).

        Only for queries that touch a handful of pages; anything larger goes through
        :meth:`fetchone` / :meth:`fetchall` on the reader thread, as does a lookup that finds
        the file busy.
        """
        if self._inline is None:
            raise StateError("state store used before start()")
        try:
            row: tuple[Any, ...] | None = self._inline.execute(sql, params).fetchone()
        except sqlite3.OperationalError:
            return await self.fetchone(sql, params)  # busy (or worse): the thread path decides
        return row

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = await self._read(
            lambda conn: conn.execute(sql, params).fetchone()
        )
        return row

    # -- checkpoints -------------------------------------------------------------------

    async def record_dead_letters(self, records: Sequence[tuple[DeadLetter, str]]) -> None:
        """Keep dead letters (the record and its raw JSON body) for the admin."""
        await self.executemany(
            "INSERT INTO dead_letters (source_topic, source_key, reason, detail, created_at, "
            "body) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (r.source_topic, r.source_key, r.reason, r.detail, r.created_at.isoformat(), body)
                for r, body in records
            ],
        )

    async def get_checkpoint(self, name: str) -> str | None:
        row = await self.fetchone("SELECT value FROM checkpoints WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    async def set_checkpoint(self, name: str, value: str) -> None:
        await self.execute(
            "INSERT INTO checkpoints (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
            "SET value = excluded.value, updated_at = datetime('now')",
            (name, value),
        )

    async def clear_checkpoint(self, name: str) -> None:
        await self.execute("DELETE FROM checkpoints WHERE name = ?", (name,))

    def table(self, name: str) -> SqliteTable:
        table = SqliteTable(self, name)
        self._tables.append(table)
        return table


class SqliteTable(Table):
    """A :class:`Table` stored in the ``kv`` table of a :class:`SqliteState`.

    Every write takes the next sequence number and a delete leaves a tombstone, so a
    running process (``pictguard serve``) sees entries another process added (``pictguard
    hashes add``) within ``poll_s``: :meth:`start` follows the table's changes.
    """

    def __init__(self, state: SqliteState, name: str, *, poll_s: float = 2.0) -> None:
        self.state = state
        self.name = name
        self.poll_s = poll_s
        self._seen = 0
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.state.start()
        if self._follower is None:
            row = await self.state.fetchone(
                "SELECT COALESCE(MAX(seq), 0) FROM kv WHERE tbl = ?", (self.name,)
            )
            self._seen = int(row[0]) if row else 0
            self._follower = asyncio.create_task(self._follow(), name=f"sqlite-table:{self.name}")

    async def stop(self) -> None:
        """Stop following; the state file is closed by its owner."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                rows = await self.state.fetchall(
                    "SELECT key, value, seq FROM kv WHERE tbl = ? AND seq > ? ORDER BY seq",
                    (self.name, self._seen),
                )
            except StateError as exc:
                log.warning("following table %s failed: %s", self.name, exc)
                continue
            for key, value, seq in rows:
                self._seen = max(self._seen, int(seq))
                self._notify(str(key), None if value is None else bytes(value))

    async def get(self, key: str) -> bytes | None:
        row = await self.state.lookup(
            "SELECT value FROM kv WHERE tbl = ? AND key = ? AND value IS NOT NULL",
            (self.name, key),
        )
        return None if row is None else bytes(row[0])

    async def put(self, key: str, value: bytes) -> None:
        await self.state.execute(
            "INSERT INTO kv (tbl, key, value, seq) VALUES "
            "(?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM kv WHERE tbl = ?)) "
            "ON CONFLICT(tbl, key) DO UPDATE SET value = excluded.value, seq = excluded.seq",
            (self.name, key, value, self.name),
        )
        self._notify(key, value)

    async def delete(self, key: str) -> None:
        await self.state.execute(
            "UPDATE kv SET value = NULL, "
            "seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM kv WHERE tbl = ?) "
            "WHERE tbl = ? AND key = ?",
            (self.name, self.name, key),
        )
        self._notify(key, None)

    async def items(self) -> AsyncIterator[tuple[str, bytes]]:  # type: ignore[override]
        last = ""
        while True:
            rows = await self.state.fetchall(
                "SELECT key, value FROM kv WHERE tbl = ? AND key > ? AND value IS NOT NULL "
                "ORDER BY key LIMIT 5000",
                (self.name, last),
            )
            if not rows:
                return
            for key, value in rows:
                yield str(key), bytes(value)
            last = str(rows[-1][0])
