"""The blast-radius guard: a broken model or a policy mistake must not wipe a bucket.

Three kinds of limits, over sliding windows:

- the number of destructive actions (delete, quarantine) in the last minute and hour;
- the share of recent object verdicts that would be destructive, over the last N verdicts;
- until that window holds enough verdicts to judge the share (a fresh install, after a
  resume), a cap on destructive verdicts, so that a burst arriving first (hash-list hits
  reach enforce before model verdicts) cannot act before the share is judged.

When one trips, the guard stays tripped (across restarts: its state lives in SQLite) until
an admin resumes. While tripped, every destructive action is held instead of performed.
Resuming clears the windows, so the actions released after review do not trip it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from enforce.settings import GuardSettings
from pipeline.events import new_id
from pipeline.state.sqlite import SqliteState

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS enforce_guard_log "
    "(id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS enforce_guard_log_kind ON enforce_guard_log (kind, ts)",
)
_STATE_KEY = "state"
_DESTRUCTIVE, _FLAGGED, _CLEAN = "d", "f", "c"
_PRUNE_EVERY = 500


@dataclass(frozen=True, slots=True)
class Trip:
    """Why and when the guard tripped."""

    trip_id: str
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class GuardStatus:
    """A snapshot for ``pictguard enforce status`` and the admin API."""

    enabled: bool
    trip: Trip | None
    destructive_last_minute: int
    destructive_last_hour: int
    flagged_ratio: float | None
    window: int


class Guard:
    """Admits or refuses destructive actions; one instance per enforce process."""

    def __init__(
        self,
        settings: GuardSettings,
        state: SqliteState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.clock = clock
        self._table = state.table("enforce_guard")
        self._lock = asyncio.Lock()
        self._destructive: deque[float] = deque()
        self._verdicts: deque[bool] = deque(maxlen=settings.ratio_window)
        self._trip: Trip | None = None
        self._reset_at = 0.0
        self._writes = 0

    @property
    def trip(self) -> Trip | None:
        """The current trip, or None while armed."""
        return self._trip

    async def start(self) -> None:
        """Load the trip state and the windows written before a restart."""
        for statement in _SCHEMA:
            await self.state.execute(statement)
        raw = await self._table.get(_STATE_KEY)
        if raw is not None:
            data = json.loads(raw)
            self._reset_at = float(data.get("reset_at", 0.0))
            if data.get("trip_id"):
                # Said once by the long-running stage (EnforceStage.start) and by
                # `pictguard enforce status`, not by every admin command that loads it.
                self._trip = Trip(
                    data["trip_id"], data["reason"], datetime.fromisoformat(data["since"])
                )
        now = self.clock()
        rows = await self.state.fetchall(
            "SELECT ts FROM enforce_guard_log WHERE kind = ? AND ts > ? ORDER BY id",
            (_DESTRUCTIVE, max(now - 3600, self._reset_at)),
        )
        self._destructive.extend(float(ts) for (ts,) in rows)
        rows = await self.state.fetchall(
            "SELECT kind FROM enforce_guard_log WHERE kind IN (?, ?) AND ts > ? "
            "ORDER BY id DESC LIMIT ?",
            (_FLAGGED, _CLEAN, self._reset_at, self.settings.ratio_window),
        )
        self._verdicts.extend(kind == _FLAGGED for (kind,) in reversed(rows))

    async def observe(self, destructive: bool) -> Trip | None:
        """Count one object verdict in the ratio window; the new trip if this one trips it.

        A destructive verdict goes through :meth:`judge` instead, which also reserves its
        action in the same step.
        """
        if not self.settings.enabled:
            return None
        async with self._lock:
            await self._refresh()
            return await self._observe(destructive)

    async def judge(self) -> tuple[bool, Trip | None]:
        """Count one destructive verdict and reserve its action, as one step: (allowed, the
        new trip if this call tripped it).

        One step, so that verdicts handled concurrently each see the counts of those before
        them: the first ``max_destructive_before_ratio`` act, the next one trips.
        """
        if not self.settings.enabled:
            return True, None
        async with self._lock:
            await self._refresh()
            trip = await self._observe(True)
            if trip is not None or self._trip is not None:
                return False, trip
            return await self._admit()

    async def _observe(self, destructive: bool) -> Trip | None:
        self._verdicts.append(destructive)
        await self._log(_FLAGGED if destructive else _CLEAN)
        if self._trip is not None:
            return None
        reason = self._ratio_exceeded(destructive)
        return None if reason is None else await self._trip_now(reason)

    def _ratio_exceeded(self, destructive: bool) -> str | None:
        """Why the window of verdicts trips the guard now, if it does.

        Before the window holds ``min_verdicts`` verdicts the ratio cannot be judged, and
        verdicts do not arrive in a fair order (hash-list hits come before model verdicts):
        then at most ``max_destructive_before_ratio`` of them may delete or quarantine, and
        the guard trips as soon as the ratio would be over its limit at ``min_verdicts``
        whatever the next verdicts are.
        """
        s = self.settings
        count, flagged = len(self._verdicts), sum(self._verdicts)
        needed = min(s.min_verdicts, s.ratio_window)
        if count >= needed:
            ratio = flagged / count
            if ratio <= s.max_flagged_ratio:
                return None
            return (
                f"{ratio:.0%} of the last {count} verdicts would delete or "
                f"quarantine (limit {s.max_flagged_ratio:.0%})"
            )
        if destructive and flagged > s.max_destructive_before_ratio:
            return (
                f"{flagged} of the first {count} verdicts would delete or quarantine, more "
                f"than the {s.max_destructive_before_ratio} allowed before the flagged ratio "
                f"is judged at {needed} verdicts (enforce.guard.max_destructive_before_ratio)"
            )
        if flagged > s.max_flagged_ratio * needed:
            return (
                f"{flagged} of the first {count} verdicts would delete or quarantine: over "
                f"{s.max_flagged_ratio:.0%} of {needed} verdicts whatever comes next"
            )
        return None

    async def admit(self) -> tuple[bool, Trip | None]:
        """Reserve one destructive action: (allowed, the new trip if this call tripped it)."""
        if not self.settings.enabled:
            return True, None
        async with self._lock:
            await self._refresh()
            return await self._admit()

    async def _admit(self) -> tuple[bool, Trip | None]:
        if self._trip is not None:
            return False, None
        now = self.clock()
        while self._destructive and self._destructive[0] <= now - 3600:
            self._destructive.popleft()
        minute = sum(1 for ts in self._destructive if ts > now - 60)
        if minute >= self.settings.max_destructive_per_minute:
            reason = (
                f"{minute} deletes/quarantines in the last minute "
                f"(limit {self.settings.max_destructive_per_minute} per minute)"
            )
            return False, await self._trip_now(reason)
        if len(self._destructive) >= self.settings.max_destructive_per_hour:
            reason = (
                f"{len(self._destructive)} deletes/quarantines in the last hour "
                f"(limit {self.settings.max_destructive_per_hour} per hour)"
            )
            return False, await self._trip_now(reason)
        self._destructive.append(now)
        await self._log(_DESTRUCTIVE, now)
        return True, None

    async def resume(self) -> Trip | None:
        """Clear the trip and the windows; returns the trip that was cleared."""
        async with self._lock:
            trip, self._trip = self._trip, None
            self._reset_at = self.clock()
            self._destructive.clear()
            self._verdicts.clear()
            await self._save()
        if trip is not None:
            log.warning("blast-radius guard resumed by an admin", extra={"reason": trip.reason})
        return trip

    async def _refresh(self) -> None:
        """While tripped, notice a resume made by another process (CLI, admin API)."""
        if self._trip is None:
            return
        raw = await self._table.get(_STATE_KEY)
        data = json.loads(raw) if raw is not None else {}
        if not data.get("trip_id"):
            log.warning("blast-radius guard was resumed by an admin")
            self._trip = None
            self._reset_at = float(data.get("reset_at", self.clock()))
            self._destructive.clear()
            self._verdicts.clear()

    def status(self) -> GuardStatus:
        """Counts and trip state as this process sees them now."""
        now = self.clock()
        verdicts = len(self._verdicts)
        return GuardStatus(
            enabled=self.settings.enabled,
            trip=self._trip,
            destructive_last_minute=sum(1 for ts in self._destructive if ts > now - 60),
            destructive_last_hour=sum(1 for ts in self._destructive if ts > now - 3600),
            flagged_ratio=(sum(self._verdicts) / verdicts) if verdicts else None,
            window=verdicts,
        )

    async def _trip_now(self, reason: str) -> Trip:
        trip = Trip(new_id(), reason, datetime.fromtimestamp(self.clock(), UTC))
        self._trip = trip
        await self._save()
        log.error(
            "BLAST-RADIUS GUARD TRIPPED: destructive actions are held until an admin runs "
            "`pictguard enforce resume`",
            extra={"reason": reason, "trip_id": trip.trip_id},
        )
        return trip

    async def _save(self) -> None:
        data: dict[str, object] = {"reset_at": self._reset_at}
        if self._trip is not None:
            data.update(
                trip_id=self._trip.trip_id,
                reason=self._trip.reason,
                since=self._trip.since.isoformat(),
            )
        await self._table.put(_STATE_KEY, json.dumps(data).encode())

    async def _log(self, kind: str, ts: float | None = None) -> None:
        await self.state.execute(
            "INSERT INTO enforce_guard_log (ts, kind) VALUES (?, ?)",
            (self.clock() if ts is None else ts, kind),
        )
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 0:
            await self._prune()

    async def _prune(self) -> None:
        # Keep what the windows can still need: an hour of actions, N verdicts.
        await self.state.execute(
            "DELETE FROM enforce_guard_log WHERE kind = ? AND ts <= ?",
            (_DESTRUCTIVE, self.clock() - 3600),
        )
        await self.state.execute(
            "DELETE FROM enforce_guard_log WHERE kind IN (?, ?) AND id < (SELECT MIN(id) FROM "
            "(SELECT id FROM enforce_guard_log WHERE kind IN (?, ?) ORDER BY id DESC LIMIT ?))",
            (_FLAGGED, _CLEAN, _FLAGGED, _CLEAN, self.settings.ratio_window),
        )
