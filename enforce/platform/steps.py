"""What pictguard did on a platform, per target and per image, so nothing is done twice.

One row per (target, content): ``target`` names what was acted on
(``pictrs:hash:<hex>``, ``lemmy:remove:post:12``, ``lemmy:ban:person:5``,
``mastodon:suspend:account:109…``, or ``followup:<system>:<action>`` for a whole follow-up)
and ``content`` is the image's sha256. A step is carried out only when no active row has
its target yet; undoing (restore, allow) marks this image's rows undone and reverses a
target only when no other image still holds it — a post with two flagged images stays
removed until both are restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.events import utcnow
from pipeline.state.sqlite import SqliteState

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS enforce_platform_steps (
        target TEXT NOT NULL, content TEXT NOT NULL, system TEXT NOT NULL,
        step TEXT NOT NULL, verdict_id TEXT NOT NULL, data TEXT NOT NULL,
        created_at TEXT NOT NULL, undone_at TEXT, PRIMARY KEY (target, content)
    )""",
    "CREATE INDEX IF NOT EXISTS enforce_platform_steps_content "
    "ON enforce_platform_steps (content, undone_at)",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded step."""

    target: str
    content: str
    system: str
    step: str
    verdict_id: str
    data: dict[str, Any]


class Steps:
    """Reads and writes ``enforce_platform_steps``."""

    def __init__(self, state: SqliteState) -> None:
        self.state = state

    async def start(self) -> None:
        """Create the table."""
        for statement in _SCHEMA:
            await self.state.execute(statement)

    async def active(self, target: str, content: str) -> Step | None:
        """This image's active row for ``target``."""
        row = await self.state.fetchone(
            "SELECT target, content, system, step, verdict_id, data FROM enforce_platform_steps "
            "WHERE target = ? AND content = ? AND undone_at IS NULL",
            (target, content),
        )
        return None if row is None else _step(row)

    async def holder(self, target: str) -> Step | None:
        """Any image's active row for ``target`` (the oldest)."""
        row = await self.state.fetchone(
            "SELECT target, content, system, step, verdict_id, data FROM enforce_platform_steps "
            "WHERE target = ? AND undone_at IS NULL ORDER BY created_at LIMIT 1",
            (target,),
        )
        return None if row is None else _step(row)

    async def held_elsewhere(self, target: str, content: str) -> bool:
        """Whether another image keeps ``target`` acted on."""
        row = await self.state.fetchone(
            "SELECT 1 FROM enforce_platform_steps WHERE target = ? AND content != ? "
            "AND undone_at IS NULL LIMIT 1",
            (target, content),
        )
        return row is not None

    async def record(
        self,
        target: str,
        content: str,
        system: str,
        step: str,
        verdict_id: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Remember a step as done (again active if it had been undone)."""
        await self.state.execute(
            "INSERT INTO enforce_platform_steps (target, content, system, step, verdict_id, "
            "data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(target, content) DO "
            "UPDATE SET system = excluded.system, step = excluded.step, verdict_id = "
            "excluded.verdict_id, data = excluded.data, created_at = excluded.created_at, "
            "undone_at = NULL",
            (target, content, system, step, verdict_id, json.dumps(data or {}), _now()),
        )

    async def of_content(self, content: str) -> list[Step]:
        """This image's active rows, oldest first."""
        rows = await self.state.fetchall(
            "SELECT target, content, system, step, verdict_id, data FROM enforce_platform_steps "
            "WHERE content = ? AND undone_at IS NULL ORDER BY created_at, target",
            (content,),
        )
        return [_step(row) for row in rows]

    async def undo(self, target: str, content: str) -> None:
        """Mark this image's row for ``target`` undone."""
        await self.state.execute(
            "UPDATE enforce_platform_steps SET undone_at = ? WHERE target = ? AND content = ? "
            "AND undone_at IS NULL",
            (_now(), target, content),
        )


def _step(row: tuple[Any, ...]) -> Step:
    return Step(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))


def _now() -> str:
    return utcnow().isoformat()
