"""``pictguard scan``: a bucket or folder end to end in one process, and its summary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pictguard.roles import classify_loops, enforce_stage
from pictguard.runtime import open_runtime
from pictguard.settings import Settings
from pipeline.context import Mode
from pipeline.events import Decision, EnforcementAction, Verdict
from pipeline.sink import sink_loop
from pipeline.storage.locations import parse_location


@dataclass
class ScanSummary:
    """What ``pictguard scan`` prints at the end."""

    target: str
    produced: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    notable: list[tuple[Verdict, EnforcementAction | None]] = field(default_factory=list)
    elapsed_s: float = 0.0
    startup_s: float = 0.0
    completed: bool = False
    # The blast-radius guard at the end: why it tripped (None while armed) and how many
    # deletes/quarantines it holds for `pictguard enforce resume`.
    guard_trip: str | None = None
    held: int = 0

    @property
    def scanned(self) -> int:
        return sum(self.decisions.values())

    @property
    def flagged(self) -> int:
        return self.decisions[Decision.FLAG_CSAM] + self.decisions[Decision.FLAG_NSFW]

    @property
    def rate(self) -> float:
        return self.scanned / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Tracker:
    """Counts final outcomes so the single-process scan knows when it is done."""

    def __init__(self, summary: ScanSummary, on_progress: Callable[[int], None] | None) -> None:
        self.summary = summary
        self.done = 0
        self.expected: int | None = None
        self.finished = asyncio.Event()
        self.on_progress = on_progress

    def record(self, verdict: Verdict, action: EnforcementAction | None) -> None:
        # Every verdict of this scan ends in one outcome, ``duplicate`` included (a rescan of
        # an object whose action is held, or done by an earlier scan): not counting it left
        # such a scan waiting forever.
        self.summary.decisions[verdict.decision] += 1
        if action is not None:
            self.summary.actions[f"{action.action.value}:{action.outcome.value}"] += 1
        if verdict.decision is not Decision.ALLOW and len(self.summary.notable) < 1000:
            self.summary.notable.append((verdict, action))
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done)
        self._check()

    def expect(self, n: int) -> None:
        self.expected = n
        self._check()

    def _check(self) -> None:
        if self.expected is not None and self.done >= self.expected:
            self.finished.set()


async def run_scan(
    settings: Settings,
    target: str,
    *,
    resume: bool = True,
    on_listed: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Scan a bucket/prefix or folder end to end in this process; return the summary."""
    from ingest.backfill import Backfill

    location = parse_location(target)
    summary = ScanSummary(target=str(location))
    tracker = _Tracker(summary, on_done)
    opened = time.perf_counter()
    async with open_runtime(settings, mode=Mode.SINGLE) as rt:
        store = rt.stores.for_location(location)
        await store.check()
        stage, enforcing = await enforce_stage(rt, tracker.record)
        loops = (
            await classify_loops(rt) + enforcing + [sink_loop(settings, rt.bus, rt.state, rt.stop)]
        )
        tasks = [asyncio.create_task(c) for c in loops]
        backfill = Backfill(rt.bus, settings, store, location, rt.state, on_produced=on_listed)
        # Objects/s counts scanning, not loading the models.
        started = time.perf_counter()
        summary.startup_s = started - opened
        try:
            result = await backfill.run(resume=resume)
            summary.produced = result.produced
            tracker.expect(result.produced)
            waiter = asyncio.create_task(tracker.finished.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            summary.completed = True
            summary.elapsed_s = time.perf_counter() - started
        finally:
            rt.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                guard = await stage.guard_report()
                summary.guard_trip = guard.trip.reason if guard.trip else None
                summary.held = guard.held
            finally:
                await rt.aclose()
    return summary
