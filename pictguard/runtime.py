"""Wiring: the same stage objects on the in-process bus (single process) or on Kafka.

Single process (``pictguard scan``/``serve``): MemoryBus, SQLite state and tables.
Distributed (``pictguard run ROLE``): KafkaBus, compacted-topic tables, one role per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from pictguard.settings import Settings, storage_scope
from pipeline.bus.base import Bus
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.context import Mode
from pipeline.health import Health, start_metrics_server
from pipeline.redact import register as register_secrets
from pipeline.settings import secret_values
from pipeline.state.shared import SharedTables
from pipeline.state.sqlite import SqliteState
from pipeline.state.table import Table
from pipeline.state.topic_table import TopicTable
from pipeline.storage.locations import Stores
from pipeline.telemetry import setup_tracing
from pipeline.topics import HASHLISTS, TABLE_TOPICS, VERDICT_CACHE

log = logging.getLogger(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT ask the loops to finish the batch in hand, commit and return."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@dataclass
class Runtime:
    """What a process has opened: bus, stores, state; closed together.

    It is the :class:`pipeline.context.RoleContext` every role is handed.
    """

    settings: Settings
    mode: Mode
    bus: Bus
    stores: Stores
    state: SqliteState
    tables: SharedTables
    cleanups: AsyncExitStack
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Readiness checks for /readyz; ``started`` is set once the role's loops are created.
    health: Health = field(default_factory=Health)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _tables_started: bool = False

    async def start_tables(self) -> None:
        """Load the shared tables (hash lists, verdict cache) once."""
        if not self._tables_started:
            self._tables_started = True
            await self.tables.start()
            self.cleanups.push_async_callback(self.tables.stop)

    async def aclose(self) -> None:
        """Close everything opened, in reverse order, each once, even if one fails."""
        await self.cleanups.aclose()


class _LoggingExitStack(AsyncExitStack):
    """An exit stack whose callbacks log their failures instead of stopping the rest."""

    def push_async_callback(self, callback: Any, /, *args: Any, **kwds: Any) -> Any:
        async def call() -> None:
            try:
                await callback(*args, **kwds)
            except Exception:
                log.exception("error while shutting down")

        return super().push_async_callback(call)


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, mode: Mode, service: str = "pictguard", locations: Sequence[str] = ()
) -> AsyncIterator[Runtime]:
    """Open bus, stores, state and tables for this process's mode.

    ``locations`` (a scan, backfill or reconcile target) join the locations the stores'
    scope allows (:func:`pictguard.settings.storage_scope`). Tracing starts here too when
    the ``OTEL_*`` environment asks for it (``service`` is the default service name) and
    is flushed last, after everything else closed.
    """
    async with _LoggingExitStack() as stack:
        # Whatever writes logs or spans in this process redacts these secrets.
        register_secrets(secret_values(settings))
        tracing = setup_tracing(service)
        if tracing is not None:
            # Flushing spans may block on the network: off the event loop.
            stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
        bus: Bus
        if mode is Mode.DISTRIBUTED:
            bus = KafkaBus(settings.kafka)
        else:
            bus = MemoryBus(table_topics=[settings.topic(t) for t in TABLE_TOPICS])
        await bus.start()
        stack.push_async_callback(bus.stop)
        stores = Stores(settings.s3, scope=storage_scope(settings, locations))
        stack.push_async_callback(stores.close)
        state = SqliteState(settings.storage.state_file)
        await state.start()
        stack.push_async_callback(state.stop)
        hashlists: Table
        cache: Table
        if mode is Mode.DISTRIBUTED:
            hashlists = TopicTable(bus, settings.topic(HASHLISTS))
            cache = TopicTable(
                bus,
                settings.topic(VERDICT_CACHE),
                max_entries=settings.classify.verdict_cache_max_entries,
            )
        else:
            hashlists = state.table(HASHLISTS)
            cache = state.table(VERDICT_CACHE)
        yield Runtime(
            settings, mode, bus, stores, state, SharedTables(hashlists, cache), cleanups=stack
        )


async def serve_metrics(runtime: Runtime, default_port: int = 0) -> None:
    """Start ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.port`` for this runtime
    (``default_port`` when unset); raise :class:`pipeline.health.HealthPortError` when they
    cannot listen.

    Started before tables and models load, so probes get answers during a long start;
    ready once ``runtime.started`` is set and every registered check passes.
    """
    runtime.health.add("start-up", runtime.started.is_set)
    server = await start_metrics_server(
        runtime.settings.metrics, runtime.health, default_port=default_port
    )
    runtime.cleanups.push_async_callback(server.close)


async def run_all(loops: list[Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
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
