"""``pictguard scan``: a bucket or folder end to end in one process, and its summary.

A scan can always be run again. Objects an earlier run already acted on come back from the
enforcer as ``duplicate`` and are counted as *already handled*, not acted on twice. Ctrl-C
(SIGINT) or SIGTERM stops the listing, lets the classifier and enforcer finish the batch
in hand, and keeps the checkpoint of the objects fully handled, so the same command
continues where it stopped; a second Ctrl-C stops at once.

The listing's checkpoint is only written once every object listed before it has its final
outcome (the in-process bus holds thousands of listed objects not yet classified, and a
resumed scan must not skip them).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pictguard.roles import classify_loops, enforce_stage
from pictguard.runtime import open_runtime
from pictguard.settings import Settings
from pipeline.bus.base import Bus, Outgoing
from pipeline.context import Mode
from pipeline.events import ActionOutcome, ActionType, Decision, EnforcementAction, Verdict
from pipeline.sink import sink_loop
from pipeline.state.sqlite import SqliteState
from pipeline.storage.base import StoreKind
from pipeline.storage.locations import Location, parse_location

# Models whose categories can add up to ``flag_csam`` (underage + sexual); hash lists only
# recognise images already known.
CSAM_CAPABLE = frozenset({"clip"})


@dataclass
class ScanSummary:
    """What ``pictguard scan`` prints at the end."""

    target: str
    produced: int = 0
    # Objects this run listed, and those it skipped without a scan (the filters and presets
    # of ``ingest``, ``ingest.backfill.since``) by why.
    listed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    too_old: int = 0  # of those skipped, older than ``ingest.backfill.since``
    decisions: Counter[str] = field(default_factory=Counter)
    # Actions this run took, "quarantine:done"; repeats of an earlier run's are not here.
    actions: Counter[str] = field(default_factory=Counter)
    # Objects an earlier run (or an earlier, interrupted attempt) already acted on, by the
    # action it took: they were skipped, not acted on twice.
    already_handled: Counter[str] = field(default_factory=Counter)
    notable: list[tuple[Verdict, EnforcementAction | None]] = field(default_factory=list)
    elapsed_s: float = 0.0
    startup_s: float = 0.0
    completed: bool = False
    interrupted: bool = False
    resumed_after: str | None = None
    # The classifiers that ran, in order; those configured but not running, with why.
    classifiers: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    # Where quarantined objects go, in words; None when no decision is quarantined.
    quarantine: str | None = None
    # The blast-radius guard at the end: why it tripped (None while armed) and how many
    # deletes/quarantines it holds for `pictguard enforce resume`.
    guard_trip: str | None = None
    held: int = 0

    @property
    def scanned(self) -> int:
        return sum(self.decisions.values())

    @property
    def skipped_everything(self) -> bool:
        """The filters skipped every object this run listed: nothing was scanned at all.

        Not counted as a mistake: objects older than ``ingest.backfill.since`` (a repeated
        scan with ``since`` may well find nothing new), and a resumed scan (what it skipped
        is only the rest after the checkpoint).
        """
        return (
            self.listed > 0
            and self.skipped.total() == self.listed
            and not self.too_old
            and self.resumed_after is None
        )

    @property
    def flagged(self) -> int:
        return self.decisions[Decision.FLAG_CSAM] + self.decisions[Decision.FLAG_NSFW]

    @property
    def csam_capable(self) -> bool:
        """Whether a model that can flag unknown CSAM ran (else only hash lists can)."""
        return any(name in CSAM_CAPABLE for name in self.classifiers)

    @property
    def rate(self) -> float:
        return self.scanned / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Progress:
    """Which listed objects still wait for their final outcome, and the checkpoints that
    become safe to write once the objects listed before them have one."""

    def __init__(self) -> None:
        self.outstanding: set[str] = set()
        self._deferred: list[tuple[str, str | None, set[str]]] = []
        self.ready: dict[str, str | None] = {}
        self.wake = asyncio.Event()

    def listed(self, keys: Iterable[str]) -> None:
        self.outstanding.update(keys)

    def handled(self, key: str) -> bool:
        """Mark ``key`` done; False when it was not waiting (a repeat delivery)."""
        if key not in self.outstanding:
            return False
        self.outstanding.discard(key)
        for _, _, waiting in self._deferred:
            waiting.discard(key)
        self._release()
        return True

    def defer(self, name: str, value: str | None) -> None:
        """Write checkpoint ``name`` (None: clear it) once everything listed so far is done."""
        self._deferred.append((name, value, set(self.outstanding)))
        self._release()

    def _release(self) -> None:
        # A later checkpoint waits for a superset of what an earlier one waits for, so they
        # become ready in the order they were asked for.
        while self._deferred and not self._deferred[0][2]:
            name, value, _ = self._deferred.pop(0)
            self.ready.pop(name, None)
            self.ready[name] = value
            self.wake.set()

    async def write(self, state: SqliteState) -> None:
        """Write the checkpoints that became safe, in order."""
        while self.ready:
            name = next(iter(self.ready))
            value = self.ready.pop(name)
            if value is None:
                await state.clear_checkpoint(name)
            else:
                await state.set_checkpoint(name, value)


class _ListingBus:
    """The bus as the listing sees it: notes each object it lists before producing it."""

    def __init__(self, bus: Bus, progress: _Progress) -> None:
        self._bus = bus
        self._progress = progress

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        self._progress.listed(r.key.decode() for r in records if r.key is not None)
        await self._bus.produce_many(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


class _ListingCheckpoints:
    """The state store as the listing sees it: checkpoints wait for the objects before them."""

    def __init__(self, state: SqliteState, progress: _Progress) -> None:
        self._state = state
        self._progress = progress

    async def get_checkpoint(self, name: str) -> str | None:
        return await self._state.get_checkpoint(name)

    async def set_checkpoint(self, name: str, value: str) -> None:
        self._progress.defer(name, value)

    async def clear_checkpoint(self, name: str) -> None:
        self._progress.defer(name, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


class _Tracker:
    """Counts final outcomes so the single-process scan knows when it is done."""

    def __init__(
        self, summary: ScanSummary, progress: _Progress, on_progress: Callable[[int], None] | None
    ) -> None:
        self.summary = summary
        self.progress = progress
        self.done = 0
        self.listing_done = False
        self.finished = asyncio.Event()
        self.on_progress = on_progress

    def record(self, verdict: Verdict, action: EnforcementAction | None) -> None:
        # Keyed by object: a verdict delivered again (a batch retried after a failure) is
        # counted once; the enforcer answers its action with ``duplicate``.
        if not self.progress.handled(verdict.key):
            return
        self.summary.decisions[verdict.decision] += 1
        if action is not None and action.outcome is ActionOutcome.DUPLICATE:
            self.summary.already_handled[action.action.value] += 1
        elif action is not None:
            self.summary.actions[f"{action.action.value}:{action.outcome.value}"] += 1
        if verdict.decision is not Decision.ALLOW and len(self.summary.notable) < 1000:
            self.summary.notable.append((verdict, action))
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done)
        self._check()

    def listed_all(self) -> None:
        self.listing_done = True
        self._check()

    def _check(self) -> None:
        if self.listing_done and not self.progress.outstanding:
            self.finished.set()


def quarantine_destination(settings: Settings) -> str | None:
    """Where this configuration quarantines flagged objects, in words (None: it never does)."""
    from enforce.quarantine import QuarantineSpec

    policy = settings.enforce.action_policy()
    if not any(policy.action_for(d) is ActionType.QUARANTINE for d in Decision):
        return None
    return QuarantineSpec.parse(settings.enforce.quarantine, settings.storage.state_dir).describe()


def _without_own_state(settings: Settings, location: Location) -> Settings:
    """Leave pictguard's own state folder out of a scan of the folder that holds it."""
    if location.kind is not StoreKind.FILE:
        return settings
    root = Path(location.root) / location.prefix
    try:
        inside = settings.storage.state_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return settings
    prefix = f"{inside.as_posix()}/"
    ingest = settings.ingest.model_copy(
        update={"exclude_prefixes": [*settings.ingest.exclude_prefixes, prefix]}
    )
    return settings.model_copy(update={"ingest": ingest})


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the batch in hand and keep the checkpoint; second: now."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # the admin insists: out of the event loop at once
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_scan(
    settings: Settings,
    target: str,
    *,
    resume: bool = True,
    on_listed: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    handle_signals: bool = False,
) -> ScanSummary:
    """Scan a bucket/prefix or folder end to end in this process; return the summary.

    With ``handle_signals`` (the CLI), SIGINT/SIGTERM end the scan early and cleanly: the
    summary comes back with ``interrupted`` set.
    """
    from classify.role import start_engine
    from ingest.backfill import Backfill

    location = parse_location(target)
    settings = _without_own_state(settings, location)
    summary = ScanSummary(target=str(location), quarantine=quarantine_destination(settings))
    progress = _Progress()
    tracker = _Tracker(summary, progress, on_done)
    opened = time.perf_counter()
    async with open_runtime(settings, mode=Mode.SINGLE, locations=[target]) as rt:
        with _stop_on_signals(rt.stop) if handle_signals else contextlib.nullcontext():
            store = rt.stores.for_location(location)
            await store.check()
            await rt.start_tables()
            engine = await start_engine(rt)
            summary.classifiers = engine.classifiers_loaded
            summary.missing = dict(engine.missing)
            stage, enforcing = await enforce_stage(rt, tracker.record)
            loops = (
                await classify_loops(rt, engine)
                + enforcing
                + [sink_loop(settings, rt.bus, rt.state, rt.stop)]
            )
            tasks = [asyncio.create_task(c) for c in loops]
            writer = asyncio.create_task(_write_checkpoints(progress, rt.state, rt.stop))
            backfill = Backfill(
                cast(Bus, _ListingBus(rt.bus, progress)),
                settings,
                store,
                location,
                cast(SqliteState, _ListingCheckpoints(rt.state, progress)),
                on_produced=on_listed,
            )
            # Objects/s counts scanning, not loading the models.
            started = time.perf_counter()
            summary.startup_s = started - opened
            try:
                result = await backfill.run(rt.stop, resume=resume)
                summary.produced = result.produced
                summary.listed = result.listed
                summary.skipped = result.skipped
                summary.too_old = result.too_old
                summary.resumed_after = result.resumed_after
                if result.completed:
                    tracker.listed_all()
                waiters = [
                    asyncio.create_task(tracker.finished.wait()),
                    asyncio.create_task(rt.stop.wait()),
                ]
                try:
                    done, _ = await asyncio.wait(
                        [*waiters, *tasks], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                for task in done:
                    if task in tasks and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                summary.completed = tracker.finished.is_set()
                summary.interrupted = not summary.completed
                summary.elapsed_s = time.perf_counter() - started
            finally:
                rt.stop.set()
                # The loops finish the batch in hand; its outcomes still count.
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(writer, return_exceptions=True)
                try:
                    await progress.write(rt.state)
                    guard = await stage.guard_report()
                    summary.guard_trip = guard.trip.reason if guard.trip else None
                    summary.held = guard.held
                finally:
                    await rt.aclose()
    return summary


async def _write_checkpoints(progress: _Progress, state: SqliteState, stop: asyncio.Event) -> None:
    """Write checkpoints as they become safe, until the scan stops."""
    while not stop.is_set():
        stopping = asyncio.create_task(stop.wait())
        woken = asyncio.create_task(progress.wake.wait())
        try:
            await asyncio.wait([stopping, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            woken.cancel()
        progress.wake.clear()
        await progress.write(state)
