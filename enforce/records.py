"""What enforce keeps in the state store: verdicts, actions, held actions.

Enforce owns these tables (``verdicts``, ``actions``, ``enforce_*``): their schema is here,
created at start-up, and no other module reads them with SQL. Every row of ``actions``
carries the full action event as JSON in ``body``, so the audit and the admin flows read the
same thing the ``actions`` topic carried. Other roles see the verdicts through
:class:`pipeline.ledger.VerdictLedger`, which :class:`Records` implements in one process.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    ObjectRef,
    Verdict,
    encode,
    utcnow,
)
from pipeline.ledger import KnownVerdict
from pipeline.state.sqlite import SqliteState

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS verdicts (
        verdict_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, object_id TEXT, sha256 TEXT,
        decision TEXT NOT NULL, reason TEXT, created_at TEXT NOT NULL, body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS verdicts_object ON verdicts (object_id)",
    "CREATE INDEX IF NOT EXISTS verdicts_sha ON verdicts (sha256)",
    """CREATE TABLE IF NOT EXISTS actions (
        action_id TEXT PRIMARY KEY, verdict_id TEXT NOT NULL, object_id TEXT, sha256 TEXT,
        decision TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL,
        created_at TEXT NOT NULL, body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS actions_object ON actions (object_id)",
    "CREATE INDEX IF NOT EXISTS actions_created ON actions (created_at)",
    "CREATE INDEX IF NOT EXISTS enforce_actions_verdict ON actions (verdict_id)",
    "CREATE INDEX IF NOT EXISTS enforce_actions_sha ON actions (sha256)",
    "CREATE INDEX IF NOT EXISTS enforce_verdicts_request ON verdicts (request_id)",
    """CREATE TABLE IF NOT EXISTS enforce_held (
        action_id TEXT PRIMARY KEY, verdict_id TEXT NOT NULL, object_id TEXT, sha256 TEXT,
        action TEXT NOT NULL, created_at TEXT NOT NULL, verdict TEXT NOT NULL,
        resolved_at TEXT, resolution TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS enforce_held_open ON enforce_held (resolved_at, created_at)",
)

# Outcomes after which the same verdict on the same content needs no second action.
# ``failed`` is not final: a later verdict may try again. ``dry_run`` is final only while
# dry-run stays on, so switching it off enforces on the next scan.
FINAL_OUTCOMES = (ActionOutcome.DONE, ActionOutcome.ALREADY_ABSENT, ActionOutcome.HELD)
# Object ids per ledger query: SQLite allows a few hundred bound values per statement.
_LOOKUP_CHUNK = 500


def _iso(moment: datetime) -> str:
    # One spelling (UTC, ISO) so that text comparison in SQL is time comparison.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class HeldAction:
    """A destructive action the guard held, waiting for ``pictguard enforce resume``."""

    action: EnforcementAction
    verdict: Verdict


class Records:
    """Reads and writes enforce's rows in a :class:`SqliteState`.

    It is also the single-process :class:`pipeline.ledger.VerdictLedger`.
    """

    def __init__(self, state: SqliteState) -> None:
        self.state = state

    async def start(self) -> None:
        """Create enforce's tables and indexes if missing."""
        await self.state.start()
        for statement in _SCHEMA:
            await self.state.execute(statement)

    # -- writing -----------------------------------------------------------------------

    async def record_verdict(self, verdict: Verdict) -> None:
        """Keep ``verdict`` (once, by verdict id)."""
        await self.state.execute(
            "INSERT OR IGNORE INTO verdicts (verdict_id, request_id, object_id, sha256, "
            "decision, reason, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                verdict.verdict_id,
                verdict.request_id,
                verdict.object.id if verdict.object else None,
                verdict.sha256,
                verdict.decision.value,
                verdict.reason.value if verdict.reason else None,
                _iso(verdict.created_at),
                encode(verdict).decode(),
            ),
        )

    async def record_action(self, action: EnforcementAction) -> None:
        """Keep ``action`` in the audit trail."""
        await self.state.execute(
            "INSERT OR IGNORE INTO actions (action_id, verdict_id, object_id, sha256, decision, "
            "action, outcome, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                action.action_id,
                action.verdict_id,
                action.object.id if action.object else None,
                action.sha256,
                action.decision.value,
                action.action.value,
                action.outcome.value,
                _iso(action.created_at),
                encode(action).decode(),
            ),
        )

    async def hold(self, action: EnforcementAction, verdict: Verdict) -> None:
        """Remember a held action with its verdict until it is released or discarded."""
        await self.state.execute(
            "INSERT OR IGNORE INTO enforce_held (action_id, verdict_id, object_id, sha256, "
            "action, created_at, verdict) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                action.action_id,
                verdict.verdict_id,
                verdict.object.id if verdict.object else None,
                verdict.sha256,
                action.action.value,
                _iso(action.created_at),
                encode(verdict).decode(),
            ),
        )

    async def resolve_held(self, action_id: str, resolution: str) -> None:
        """Mark a held action released or discarded."""
        await self.state.execute(
            "UPDATE enforce_held SET resolved_at = ?, resolution = ? WHERE action_id = ? "
            "AND resolved_at IS NULL",
            (_iso(utcnow()), resolution, action_id),
        )

    # -- reading -----------------------------------------------------------------------

    async def prior_action(
        self, verdict: Verdict, action: ActionType, *, dry_run: bool
    ) -> EnforcementAction | None:
        """The latest earlier final action this verdict repeats, if any.

        A repeat is the same verdict id, or, for an object, the same decision and action on
        the same content (same sha256, or the same scan request when the content hash is
        unknown) — which is what a classify replica replaying its input after a crash
        produces, with fresh verdict ids.
        """
        outcomes = [o.value for o in FINAL_OUTCOMES]
        if dry_run:
            outcomes.append(ActionOutcome.DRY_RUN.value)
        # Only "?" placeholders are formatted into these statements; values are bound.
        final = f"a.outcome IN ({','.join('?' * len(outcomes))})"
        row = await self.state.fetchone(
            f"SELECT a.body FROM actions a WHERE a.verdict_id = ? AND a.action = ? AND {final} "  # noqa: S608
            "ORDER BY a.created_at LIMIT 1",
            (verdict.verdict_id, action.value, *outcomes),
        )
        if row is None and verdict.object is None:
            # An inline upload replayed after a crash: same request, fresh verdict id.
            # CROSS JOIN keeps verdicts (found by request id) the outer loop: with a plain
            # JOIN SQLite walks every inline action through "object_id IS NULL", which made
            # each sync verdict cost a scan of all earlier ones.
            row = await self.state.fetchone(
                "SELECT a.body FROM verdicts v CROSS JOIN actions a "  # noqa: S608
                "ON a.verdict_id = v.verdict_id "
                f"WHERE v.request_id = ? AND a.object_id IS NULL AND a.action = ? AND {final} "
                "ORDER BY a.created_at LIMIT 1",
                (verdict.request_id, action.value, *outcomes),
            )
        if row is None and verdict.object is not None:
            row = await self.state.fetchone(
                "SELECT a.body FROM actions a LEFT JOIN verdicts v ON v.verdict_id = a.verdict_id "  # noqa: S608
                f"WHERE a.object_id = ? AND a.decision = ? AND a.action = ? AND {final} "
                "AND (a.sha256 = ? OR v.request_id = ?) ORDER BY a.created_at DESC LIMIT 1",
                (
                    verdict.object.id,
                    verdict.decision.value,
                    action.value,
                    *outcomes,
                    verdict.sha256,
                    verdict.request_id,
                ),
            )
        return None if row is None else EnforcementAction.model_validate_json(row[0])

    async def restore_of(self, action: EnforcementAction) -> EnforcementAction | None:
        """The admin's restore that undid ``action`` (a quarantine), if there was one."""
        row = await self.state.fetchone(
            "SELECT body FROM actions WHERE action = 'restore' AND outcome = 'done' "
            "AND verdict_id = ? AND object_id IS ? ORDER BY created_at DESC LIMIT 1",
            (action.verdict_id, action.object.id if action.object else None),
        )
        return None if row is None else EnforcementAction.model_validate_json(row[0])

    async def open_held(self) -> list[HeldAction]:
        """Held actions not yet released or discarded, oldest first."""
        rows = await self.state.fetchall(
            "SELECT h.verdict, a.body FROM enforce_held h JOIN actions a "
            "ON a.action_id = h.action_id WHERE h.resolved_at IS NULL ORDER BY h.created_at"
        )
        return [
            HeldAction(EnforcementAction.model_validate_json(body), Verdict.model_validate_json(v))
            for v, body in rows
        ]

    async def count_open_held(self) -> int:
        """How many held actions wait for an admin."""
        row = await self.state.fetchone(
            "SELECT COUNT(*) FROM enforce_held WHERE resolved_at IS NULL"
        )
        return int(row[0]) if row else 0

    async def verdict(self, verdict_id: str) -> Verdict | None:
        """A recorded verdict by id."""
        row = await self.state.fetchone(
            "SELECT body FROM verdicts WHERE verdict_id = ?", (verdict_id,)
        )
        return None if row is None else Verdict.model_validate_json(row[0])

    async def latest_verdict_for(
        self, *, object_id: str | None = None, sha256: str | None = None
    ) -> Verdict | None:
        """The newest recorded verdict about an object, or about a content hash."""
        column, value = ("object_id", object_id) if object_id else ("sha256", sha256)
        row = await self.state.fetchone(
            f"SELECT body FROM verdicts WHERE {column} = ? "  # noqa: S608
            "ORDER BY created_at DESC LIMIT 1",
            (value,),
        )
        return None if row is None else Verdict.model_validate_json(row[0])

    async def verdicts_with(self, sha256: str) -> list[Verdict]:
        """Every recorded verdict about content ``sha256``, newest first."""
        rows = await self.state.fetchall(
            "SELECT body FROM verdicts WHERE sha256 = ? ORDER BY created_at DESC", (sha256,)
        )
        return [Verdict.model_validate_json(body) for (body,) in rows]

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        """The ledger: every recorded verdict per object id, for those of ``refs`` that have
        any."""
        found: dict[str, list[KnownVerdict]] = {}
        ids = [r.id for r in refs]
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self.state.fetchall(
                "SELECT object_id, decision, reason, body FROM verdicts "  # noqa: S608 — placeholders only
                f"WHERE object_id IN ({marks})",
                chunk,
            )
            for object_id, decision, reason, body in rows:
                etag = None
                with contextlib.suppress(ValueError, AttributeError):
                    etag = (json.loads(body).get("object") or {}).get("etag")
                found.setdefault(str(object_id), []).append(
                    KnownVerdict(etag=etag, decision=str(decision), reason=reason)
                )
        return found

    async def quarantined(
        self,
        *,
        verdict_id: str | None = None,
        object_id: str | None = None,
        sha256: str | None = None,
        key: str | None = None,
    ) -> list[EnforcementAction]:
        """Quarantine actions whose copy has not been restored yet, newest first.

        ``object_id`` matches the original object or the quarantined copy; ``key`` the
        original key in any bucket.
        """
        where, params = [], []
        if verdict_id:
            where.append("a.verdict_id = ?")
            params.append(verdict_id)
        if object_id:
            where.append(
                "(a.object_id = ? OR json_extract(a.body, '$.quarantine.bucket') || '/' || "
                "json_extract(a.body, '$.quarantine.key') = ?)"
            )
            params.append(object_id)
            params.append(object_id.split("://", 1)[-1])
        if sha256:
            where.append("a.sha256 = ?")
            params.append(sha256)
        if key:
            where.append("json_extract(a.body, '$.object.key') = ?")
            params.append(key)
        if not where:
            return []
        rows = await self.state.fetchall(
            "SELECT a.body FROM actions a WHERE a.action = 'quarantine' "  # noqa: S608
            "AND a.outcome IN ('done', 'already_absent') "
            "AND json_extract(a.body, '$.quarantine') IS NOT NULL "
            # A kept upload has no original to put back (pict-rs never stored it).
            "AND a.object_id IS NOT NULL "
            f"AND ({' OR '.join(where)}) "
            "AND NOT EXISTS (SELECT 1 FROM actions r WHERE r.action = 'restore' "
            "AND r.outcome = 'done' AND r.verdict_id = a.verdict_id "
            "AND r.object_id IS a.object_id) "
            "ORDER BY a.created_at DESC",
            params,
        )
        seen: set[str] = set()
        out = []
        for (body,) in rows:
            action = EnforcementAction.model_validate_json(body)
            qid = action.quarantine.id if action.quarantine else ""
            if qid not in seen:
                seen.add(qid)
                out.append(action)
        return out

    async def actions(
        self,
        *,
        since: datetime | None = None,
        decision: Decision | None = None,
        action: ActionType | None = None,
        outcome: ActionOutcome | None = None,
        verdict_id: str | None = None,
        limit: int = 1000,
    ) -> list[EnforcementAction]:
        """The audit trail, newest first."""
        where, params = ["1 = 1"], []
        if since is not None:
            where.append("created_at >= ?")
            params.append(_iso(since))
        if decision is not None:
            where.append("decision = ?")
            params.append(decision.value)
        if action is not None:
            where.append("action = ?")
            params.append(action.value)
        if outcome is not None:
            where.append("outcome = ?")
            params.append(outcome.value)
        if verdict_id is not None:
            where.append("verdict_id = ?")
            params.append(verdict_id)
        rows = await self.state.fetchall(
            f"SELECT body FROM actions WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY created_at DESC, action_id LIMIT ?",
            (*params, limit),
        )
        return [EnforcementAction.model_validate_json(body) for (body,) in rows]
