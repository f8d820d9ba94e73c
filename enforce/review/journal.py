"""What the review console keeps in the state file: sessions, reviewer settings, marks, and
the review audit (who viewed, revealed, decided or exported what, and when).

The review audit is a table of its own beside enforce's ``actions``: a view or a reveal
is not an enforcement action and travels on no topic, but it belongs to the same trail;
``pictguard audit --reviews``, the console's audit page and ``pictguard evidence export``
read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from enforce.preserve import UPLOADS_TABLE
from pipeline.events import utcnow
from pipeline.state.sqlite import SqliteState

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS review_sessions (
        session_hash TEXT PRIMARY KEY, reviewer TEXT NOT NULL, via TEXT NOT NULL,
        csrf TEXT NOT NULL, created_at TEXT NOT NULL, last_seen TEXT NOT NULL,
        expires_at TEXT NOT NULL, ended_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS review_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, reviewer TEXT NOT NULL,
        event TEXT NOT NULL, item_id TEXT, verdict_id TEXT, sha256 TEXT, detail TEXT,
        session_hash TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS review_events_item ON review_events (item_id, event, at)",
    "CREATE INDEX IF NOT EXISTS review_events_verdict ON review_events (verdict_id)",
    "CREATE INDEX IF NOT EXISTS review_events_at ON review_events (at)",
    """CREATE TABLE IF NOT EXISTS review_prefs (
        reviewer TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS review_marks (
        item_id TEXT PRIMARY KEY, status TEXT NOT NULL, reviewer TEXT NOT NULL,
        at TEXT NOT NULL, reason TEXT, verdict_id TEXT, sha256 TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS review_marks_verdict ON review_marks (verdict_id)",
)


class ReviewEvent(StrEnum):
    """The row types of the review audit."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_OUT = "sign_out"
    VIEW_QUEUE = "view_queue"  # the queue page, with the items it listed (blurred)
    VIEW_ITEM = "view_item"  # one item's page (blurred)
    REVEAL = "reveal"  # one item shown unblurred, on purpose
    CONFIRM = "confirm"
    ALLOW = "allow"
    DELETE = "delete"
    SETTINGS = "settings"
    EXPORT = "export"  # an evidence package was written


class Mark(StrEnum):
    """Where a reviewed item stands."""

    CONFIRMED = "confirmed"  # real: kept in quarantine, marked for a report
    ALLOWED = "allowed"  # a false positive: allowlisted and restored
    DELETED = "deleted"


BlurLevel = Literal["strong", "medium", "light"]


class ReviewerPrefs(BaseModel):
    """One reviewer's own settings, kept on the server."""

    blur: BlurLevel = Field("strong", description="How much the thumbnails are blurred")
    greyscale: bool = Field(True, description="Thumbnails (and reveals) without colour")
    reveal_disabled: bool = Field(
        False, description="Hide the reveal button for this reviewer (protect yourself)"
    )


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in reviewer."""

    session_hash: str
    reviewer: str
    via: str  # "admin token" or "reviewer token"
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of the review audit."""

    at: datetime
    reviewer: str
    event: str
    item_id: str | None = None
    verdict_id: str | None = None
    sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The row as the evidence package and ``--json`` print it."""
        return {
            "at": self.at.isoformat(),
            "reviewer": self.reviewer,
            "event": self.event,
            "item_id": self.item_id,
            "verdict_id": self.verdict_id,
            "sha256": self.sha256,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class MarkRow:
    """A reviewer's decision on one item."""

    item_id: str
    status: Mark
    reviewer: str
    at: datetime
    reason: str | None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def hash_session(session_id: str) -> str:
    """The stored form of a session id: a stolen state file yields no usable cookie."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Journal:
    """Reads and writes the console's tables in a :class:`SqliteState`."""

    def __init__(self, state: SqliteState) -> None:
        self.state = state
        self._started = False

    async def start(self) -> None:
        """Create the tables if missing."""
        if self._started:
            return
        await self.state.start()
        # The kept uploads' table belongs to enforce.preserve; the queue reads it even where
        # no upload was ever kept.
        for statement in (*_SCHEMA, UPLOADS_TABLE):
            await self.state.execute(statement)
        self._started = True

    # -- sessions ----------------------------------------------------------------------

    async def open_session(
        self, session_id: str, reviewer: str, via: str, csrf: str, lifetime: timedelta
    ) -> Session:
        """Remember a new sign-in."""
        now = utcnow()
        session = Session(hash_session(session_id), reviewer, via, csrf, now + lifetime)
        await self.state.execute(
            "INSERT INTO review_sessions (session_hash, reviewer, via, csrf, created_at, "
            "last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session.session_hash,
                reviewer,
                via,
                csrf,
                _iso(now),
                _iso(now),
                _iso(session.expires_at),
            ),
        )
        return session

    async def session(self, session_id: str, idle: timedelta) -> Session | None:
        """The live session behind a cookie (touching it), or None if unknown or expired."""
        now = utcnow()
        digest = hash_session(session_id)
        row = await self.state.fetchone(
            "SELECT reviewer, via, csrf, expires_at, last_seen FROM review_sessions "
            "WHERE session_hash = ? AND ended_at IS NULL",
            (digest,),
        )
        if row is None:
            return None
        reviewer, via, csrf, expires_at, last_seen = row
        expires = datetime.fromisoformat(expires_at)
        if expires <= now or datetime.fromisoformat(last_seen) + idle <= now:
            await self.end_session(digest)
            return None
        await self.state.execute(
            "UPDATE review_sessions SET last_seen = ? WHERE session_hash = ?", (_iso(now), digest)
        )
        return Session(digest, reviewer, via, csrf, expires)

    async def end_session(self, session_hash: str) -> None:
        """Sign a session out."""
        await self.state.execute(
            "UPDATE review_sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
            (_iso(utcnow()), session_hash),
        )

    # -- the review audit --------------------------------------------------------------

    async def record(
        self,
        reviewer: str,
        event: ReviewEvent,
        *,
        item_id: str | None = None,
        verdict_id: str | None = None,
        sha256: str | None = None,
        detail: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        """Add one row to the review audit."""
        await self.state.execute(
            "INSERT INTO review_events (at, reviewer, event, item_id, verdict_id, sha256, "
            "detail, session_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _iso(utcnow()),
                reviewer,
                event.value,
                item_id,
                verdict_id,
                sha256,
                json.dumps(detail or {}, sort_keys=True),
                session.session_hash if session else None,
            ),
        )

    async def revealed_since(self, session: Session, item_id: str, since: datetime) -> bool:
        """Whether this session revealed ``item_id`` at or after ``since``."""
        row = await self.state.fetchone(
            "SELECT 1 FROM review_events WHERE session_hash = ? AND item_id = ? AND event = ? "
            "AND at >= ? LIMIT 1",
            (session.session_hash, item_id, ReviewEvent.REVEAL.value, _iso(since)),
        )
        return row is not None

    async def audit(
        self,
        *,
        item_id: str | None = None,
        verdict_id: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[AuditRow]:
        """Review audit rows, newest first."""
        where, params = ["1 = 1"], []
        if item_id is not None or verdict_id is not None:
            where.append("(item_id = ? OR verdict_id = ?)")
            params += [item_id or "", verdict_id or ""]
        if since is not None:
            where.append("at >= ?")
            params.append(_iso(since))
        rows = await self.state.fetchall(
            "SELECT at, reviewer, event, item_id, verdict_id, sha256, detail FROM review_events "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            AuditRow(
                datetime.fromisoformat(at),
                reviewer,
                event,
                item,
                verdict,
                sha,
                json.loads(detail) if detail else {},
            )
            for at, reviewer, event, item, verdict, sha, detail in rows
        ]

    # -- reviewer settings -------------------------------------------------------------

    async def prefs(self, reviewer: str) -> ReviewerPrefs:
        """A reviewer's settings (the defaults until they change them)."""
        row = await self.state.fetchone(
            "SELECT body FROM review_prefs WHERE reviewer = ?", (reviewer,)
        )
        return ReviewerPrefs() if row is None else ReviewerPrefs.model_validate_json(row[0])

    async def save_prefs(self, reviewer: str, prefs: ReviewerPrefs) -> None:
        """Keep a reviewer's settings."""
        await self.state.execute(
            "INSERT INTO review_prefs (reviewer, body, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (reviewer) DO UPDATE SET body = excluded.body, "
            "updated_at = excluded.updated_at",
            (reviewer, prefs.model_dump_json(), _iso(utcnow())),
        )

    # -- marks -------------------------------------------------------------------------

    async def mark(
        self,
        item_id: str,
        status: Mark,
        reviewer: str,
        reason: str,
        *,
        verdict_id: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Set where an item stands after a decision."""
        await self.state.execute(
            "INSERT INTO review_marks (item_id, status, reviewer, at, reason, verdict_id, sha256) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET "
            "status = excluded.status, reviewer = excluded.reviewer, at = excluded.at, "
            "reason = excluded.reason",
            (item_id, status.value, reviewer, _iso(utcnow()), reason, verdict_id, sha256),
        )

    async def marks(self, item_ids: list[str] | None = None) -> dict[str, MarkRow]:
        """Marks by item id (all of them, or those of ``item_ids``)."""
        if item_ids is not None and not item_ids:
            return {}
        query = "SELECT item_id, status, reviewer, at, reason FROM review_marks"
        params: tuple[str, ...] = ()
        if item_ids is not None:
            query += f" WHERE item_id IN ({','.join('?' * len(item_ids))})"
            params = tuple(item_ids)
        rows = await self.state.fetchall(query, params)
        return {
            item: MarkRow(item, Mark(status), reviewer, datetime.fromisoformat(at), reason)
            for item, status, reviewer, at, reason in rows
        }

    async def marks_for_verdict(self, verdict_id: str) -> list[MarkRow]:
        """Every mark on items of one verdict (for the evidence package)."""
        rows = await self.state.fetchall(
            "SELECT item_id, status, reviewer, at, reason FROM review_marks WHERE verdict_id = ?",
            (verdict_id,),
        )
        return [
            MarkRow(item, Mark(status), reviewer, datetime.fromisoformat(at), reason)
            for item, status, reviewer, at, reason in rows
        ]
