"""Wiring: the same stage objects on the in-process bus (single process) or on Kafka.

Single process (``pictguard scan``/``serve``): MemoryBus, SQLite state and tables.
Distributed (``pictguard run ROLE``): KafkaBus, compacted-topic tables, one role per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from classify.base import ClassifyTables

if TYPE_CHECKING:
    from classify.engine import ClassifyEngine
from pipeline.bus.base import Bus, Message
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.events import (
    ActionOutcome,
    DeadLetter,
    Decision,
    EnforcementAction,
    SchemaError,
    Verdict,
    decode,
)
from pipeline.metrics import Health, start_metrics_server
from pipeline.settings import Settings, SettingsError
from pipeline.stage import consume
from pipeline.state.sqlite import SqliteState
from pipeline.state.table import Table
from pipeline.state.topic_table import TopicTable
from pipeline.storage.locations import Stores, parse_location
from pipeline.telemetry import setup_tracing
from pipeline.topics import (
    ACTIONS,
    DEAD_LETTER,
    HASHLISTS,
    SCAN_BULK,
    SCAN_SYNC,
    TABLE_TOPICS,
    VERDICT_CACHE,
    VERDICTS,
)

log = logging.getLogger(__name__)


def group(settings: Settings, role: str) -> str:
    return f"{settings.kafka.group_prefix}{role}"


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT ask the loops to finish the batch in hand, commit and return."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@dataclass
class Runtime:
    """What a process has opened: bus, stores, state; closed together."""

    settings: Settings
    bus: Bus
    stores: Stores
    state: SqliteState
    tables: ClassifyTables
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Readiness checks for /readyz; ``started`` is set once the role's loops are created.
    health: Health = field(default_factory=Health)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        await _close_all(self._closers)


async def _close_all(closers: list[Callable[[], Awaitable[None]]]) -> None:
    """Close in reverse order of opening, each once, even if one of them fails."""
    while closers:
        closer = closers.pop()
        try:
            await closer()
        except Exception:
            log.exception("error while shutting down")


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, distributed: bool, service: str = "pictguard"
) -> AsyncIterator[Runtime]:
    """Open bus, stores, state and tables for this process's mode.

    Tracing starts here too when the ``OTEL_*`` environment asks for it (``service`` is
    the default service name) and is flushed last, after everything else closed.
    """
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        tracing = setup_tracing(service)
        if tracing is not None:
            closers.append(_async(tracing.shutdown))
        bus: Bus
        if distributed:
            bus = KafkaBus(settings.kafka)
        else:
            bus = MemoryBus(table_topics=[settings.topic(t) for t in TABLE_TOPICS])
        await bus.start()
        closers.append(bus.stop)
        stores = Stores(settings.s3)
        closers.append(stores.close)
        state = SqliteState(settings.storage.state_file)
        await state.start()
        closers.append(state.stop)
        hashlists: Table
        cache: Table
        if distributed:
            hashlists = TopicTable(bus, settings.topic(HASHLISTS))
            cache = TopicTable(
                bus,
                settings.topic(VERDICT_CACHE),
                max_entries=settings.classify.verdict_cache_max_entries,
            )
        else:
            hashlists = state.table(HASHLISTS)
            cache = state.table(VERDICT_CACHE)
        runtime = Runtime(settings, bus, stores, state, ClassifyTables(hashlists, cache))
        runtime._closers = closers
        yield runtime
    finally:
        await _close_all(closers)


async def start_tables(runtime: Runtime) -> None:
    await runtime.tables.hashlists.start()
    await runtime.tables.verdict_cache.start()
    runtime._closers.append(runtime.tables.hashlists.stop)
    runtime._closers.append(runtime.tables.verdict_cache.stop)


async def classify_tasks(
    runtime: Runtime, engine: ClassifyEngine | None = None
) -> list[Coroutine[Any, Any, None]]:
    """Start the engine and return the consume loops of the classify role (sync lane first)."""
    from classify.stage import ClassifyStage

    s = runtime.settings
    if engine is None:
        engine = await start_engine(runtime)
    stage = ClassifyStage(runtime.bus, s, runtime.stores, engine)
    # One consumer per lane, so a bulk backlog never delays an upload waiting for its answer.
    lanes = (
        (SCAN_SYNC, "classify-sync", s.classify.sync_inflight_batches, True),
        (SCAN_BULK, "classify", s.classify.inflight_batches, False),
    )
    return [
        consume(
            runtime.bus,
            [s.topic(topic)],
            group(s, name),
            stage,
            runtime.stop,
            max_records=s.classify.fetch_batch,
            max_inflight=inflight,
            low_latency=low_latency,
        )
        for topic, name, inflight, low_latency in lanes
    ]


async def start_engine(runtime: Runtime) -> ClassifyEngine:
    from classify.engine import ClassifyEngine

    engine = ClassifyEngine(runtime.settings.classify, runtime.tables)
    runtime.health.add("models", lambda: engine.ready)
    await engine.start()
    runtime._closers.append(engine.stop)
    return engine


async def enforce_tasks(
    runtime: Runtime,
    on_outcome: Callable[[Verdict, EnforcementAction | None], None] | None = None,
) -> list[Coroutine[Any, Any, None]]:
    from enforce.stage import EnforceStage

    s = runtime.settings
    stage = EnforceStage(runtime.bus, s, runtime.stores, runtime.state, on_outcome=on_outcome)
    await stage.start()
    runtime._closers.append(stage.stop)
    return [consume(runtime.bus, [s.topic(VERDICTS)], group(s, "enforce"), stage, runtime.stop)]


class _LocalSink:
    """Single-process reader of the output-only topics.

    Nothing else reads ``actions`` (enforce already records them in SQLite) or
    ``dead-letter`` in one process, and an unread in-process queue would stop its producers
    once full. Dead letters are kept in the ``dead_letters`` table for the admin.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.state = runtime.state
        self.dead_letter_topic = runtime.settings.topic(DEAD_LETTER)

    async def handle(self, batch: Sequence[Message]) -> None:
        rows = []
        for message in batch:
            if message.topic != self.dead_letter_topic:
                continue
            try:
                record = decode(message.value, DeadLetter)
            except SchemaError:
                continue
            rows.append(
                (
                    record.source_topic,
                    record.source_key,
                    record.reason,
                    record.detail,
                    record.created_at.isoformat(),
                    message.value.decode(),
                )
            )
        if rows:
            await self.state.executemany(
                "INSERT INTO dead_letters (source_topic, source_key, reason, detail, created_at, "
                "body) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )


def sink_tasks(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    s = runtime.settings
    return [
        consume(
            runtime.bus,
            [s.topic(ACTIONS), s.topic(DEAD_LETTER)],
            group(s, "local-sink"),
            _LocalSink(runtime),
            runtime.stop,
            max_records=1024,
        )
    ]


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
        if action is not None and action.outcome is ActionOutcome.DUPLICATE:
            return
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
    async with open_runtime(settings, distributed=False) as runtime:
        store = runtime.stores.for_location(location)
        await store.check()
        await start_tables(runtime)
        loops = (
            await classify_tasks(runtime)
            + await enforce_tasks(runtime, tracker.record)
            + sink_tasks(runtime)
        )
        tasks = [asyncio.create_task(c) for c in loops]
        backfill = Backfill(
            runtime.bus, settings, store, location, runtime.state, on_produced=on_listed
        )
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
            runtime.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.aclose()
    return summary


async def serve_metrics(runtime: Runtime) -> None:
    """Start ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.port`` for this runtime.

    Started before tables and models load, so probes get answers during a long start;
    ready once ``runtime.started`` is set and every registered check passes.
    """
    runtime.health.add("start-up", runtime.started.is_set)
    server = await start_metrics_server(runtime.settings.metrics, runtime.health)
    if server is not None:
        runtime._closers.append(server.close)


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closer() -> None:
        # Flushing spans may block on the network: off the event loop.
        await asyncio.to_thread(close)

    return closer


async def run_role(settings: Settings, role: str) -> None:
    """Run one role on Kafka until SIGTERM."""
    async with open_runtime(settings, distributed=True, service=f"pictguard-{role}") as runtime:
        stop_on_signals(runtime.stop)
        if role != "api":  # the API serves /metrics, /healthz and /readyz on its own port
            await serve_metrics(runtime)
        await runtime.bus.ensure_topics([settings.topic(t.name) for t in _all_topics()])
        loops: list[Coroutine[Any, Any, None]] = []
        if role == "classify":
            await start_tables(runtime)
            loops = await classify_tasks(runtime)
        elif role == "enforce":
            await start_tables(runtime)
            loops = await enforce_tasks(runtime)
        elif role == "ingest":
            from ingest.role import ingest_tasks

            loops = await ingest_tasks(runtime)
        elif role == "api":
            from validate_api.server import build_api, serve_http

            await start_tables(runtime)
            app = await build_api(runtime)
            loops = [serve_http(app, settings.api.host, settings.api.port, runtime.stop)]
        else:
            raise ValueError(f"unknown role {role!r}: choose ingest, classify, enforce or api")
        log.info("%s role running on Kafka at %s", role, settings.kafka.bootstrap_servers)
        runtime.started.set()
        try:
            await _run_all(loops, runtime.stop)
        finally:
            runtime.stop.set()
            await runtime.aclose()
        log.info("%s role stopped", role)


async def run_serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    """Every role in this process on the in-process bus: API, classify, enforce, ingest."""
    from ingest.role import ingest_tasks
    from validate_api.server import build_api, serve_http

    async with open_runtime(settings, distributed=False) as runtime:
        stop_on_signals(runtime.stop)
        await start_tables(runtime)
        engine = await start_engine(runtime)
        loops = (
            await classify_tasks(runtime, engine)
            + await enforce_tasks(runtime)
            + sink_tasks(runtime)
            + await ingest_tasks(runtime)
        )
        app = await build_api(runtime, engine)
        loops.append(serve_http(app, settings.api.host, settings.api.port, runtime.stop, started))
        try:
            await _run_all(loops, runtime.stop)
        finally:
            runtime.stop.set()
            await runtime.aclose()


async def _run_all(loops: list[Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
    """Run loops together; the first failure stops the others and is raised."""
    tasks = [asyncio.create_task(c) for c in loops]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        await asyncio.gather(*pending)
    finally:
        stop.set()  # loops that watch it end by themselves; the rest are cancelled
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _all_topics() -> tuple[Any, ...]:
    from pipeline.topics import TOPICS

    return TOPICS


async def run_backfill(
    settings: Settings,
    target: str,
    *,
    resume: bool = True,
    on_listed: Callable[[int], None] | None = None,
    **options: Any,
) -> int:
    """Publish a bucket/folder listing to Kafka; return the number of scan requests.

    ``options`` go to :class:`ingest.backfill.Backfill` (prefixes, parallel, rate_limit,
    since, on_progress).
    """
    from ingest.backfill import Backfill

    location = parse_location(target)
    async with open_runtime(settings, distributed=True) as runtime:
        stop_on_signals(runtime.stop)
        store = runtime.stores.for_location(location)
        await store.check()
        await runtime.bus.ensure_topics([settings.topic(SCAN_BULK)])
        result = await Backfill(
            runtime.bus,
            settings,
            store,
            location,
            runtime.state,
            on_produced=on_listed,
            **options,
        ).run(runtime.stop, resume=resume)
        await runtime.aclose()
        return result.produced


async def run_reconcile_once(settings: Settings, target: str) -> int:
    """One reconciliation pass over ``target``: enqueue objects changed since the last pass
    that have no verdict. Reads verdicts from SQLite, or from Kafka with
    ``storage.backend: kafka``."""
    from ingest.reconcile import TableVerdicts, reconcile_once
    from pipeline.topics import OBJECT_VERDICTS

    if settings.storage.backend != "kafka":
        raise SettingsError(
            "pictguard reconcile publishes to Kafka (storage.backend: kafka); on a single box "
            "turn on ingest.reconcile for `pictguard serve`, or run `pictguard scan`"
        )
    location = parse_location(target)
    async with open_runtime(settings, distributed=True) as runtime:
        stop_on_signals(runtime.stop)
        await runtime.stores.for_location(location).check()
        table = TopicTable(runtime.bus, settings.topic(OBJECT_VERDICTS))
        await table.start()
        runtime._closers.append(table.stop)
        verdicts = TableVerdicts(table)
        await runtime.bus.ensure_topics([settings.topic(SCAN_BULK)])
        n = await reconcile_once(
            settings, runtime.bus, runtime.stores, runtime.state, location, verdicts=verdicts
        )
        await runtime.aclose()
        return n
