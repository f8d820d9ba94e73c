"""What the composition root runs for remote workers: the server side on the API process,
and the worker process itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import SecretStr

from classify.cache import VerdictCache
from classify.engine import ClassifyEngine
from classify.fastpath import FastPath
from classify.remote.dispatcher import Clock, Dispatcher
from classify.remote.server import worker_router
from classify.remote.stage import RemoteEvaluator, RemoteStage
from classify.remote.worker import RemoteWorker
from classify.settings import ClassifyConfig, ClassifySettings
from pipeline.context import RoleContext
from pipeline.events import Lane
from pipeline.health import Health
from pipeline.settings import SettingsError
from pipeline.stage import consume
from pipeline.state.memory import MemoryTable
from pipeline.state.shared import SharedTables
from pipeline.topics import SCAN_BULK, SCAN_SYNC

# What /readyz names when nothing can classify.
NO_WORKER = "no remote worker connected and no local classifier runs"


@dataclass
class RemoteServer:
    """The server side: consume loops for the workers, the worker API, the lease table."""

    loops: list[Coroutine[Any, Any, None]]
    router: APIRouter
    dispatcher: Dispatcher


async def server(
    ctx: RoleContext[ClassifyConfig],
    fast: FastPath,
    *,
    local_classifier: bool,
    admin_token: SecretStr | str | None = None,
    clock: Clock = time.monotonic,
) -> RemoteServer:
    """Lease this process's share of the scan requests to remote workers.

    The consume loops join classify's consumer groups (``classify-sync``, ``classify``), so
    they split the requests with any classify process, and take messages only while a
    worker wants them. ``fast`` answers from hash lists and the verdict cache first.
    """
    s = ctx.settings
    remote = s.classify.remote
    dispatcher = Dispatcher(remote, clock=clock, flag_nsfw=s.classify.policy.flag_nsfw)
    evaluator = RemoteEvaluator(dispatcher, fast, VerdictCache(ctx.tables.verdict_cache))
    stage = RemoteStage(
        ctx.bus,
        s,
        ctx.stores,
        evaluator,
        concurrency={
            Lane.BULK: remote.max_outstanding,
            Lane.SYNC: max(remote.max_outstanding, s.classify.sync_concurrency),
        },
    )
    lanes = (
        (SCAN_SYNC, "classify-sync", Lane.SYNC, s.classify.sync_inflight_batches, True),
        (SCAN_BULK, "classify", Lane.BULK, s.classify.inflight_batches, False),
    )
    loops: list[Coroutine[Any, Any, None]] = [
        consume(
            ctx.bus,
            [s.topic(topic)],
            s.group(group),
            stage,
            ctx.stop,
            max_records=min(s.classify.fetch_batch, remote.max_outstanding),
            max_inflight=inflight,
            low_latency=low_latency,
            gate=lambda lane=lane: dispatcher.wanted(lane),  # type: ignore[misc]
        )
        for topic, group, lane, inflight, low_latency in lanes
    ]
    loops.append(dispatcher.run(ctx.stop))

    async def close() -> None:
        dispatcher.close()

    ctx.cleanups.push_async_callback(close)
    if not local_classifier:
        ctx.health.add(NO_WORKER, lambda: dispatcher.any_connected)
    return RemoteServer(
        loops, worker_router(dispatcher, remote, admin_token=admin_token), dispatcher
    )


def worker_engine_settings(settings: ClassifySettings) -> ClassifySettings:
    """The engine settings of a worker: its own models; hash lists and the verdict cache
    are the server's (checked before anything is leased), so here they stay empty."""
    return settings.model_copy(update={"verdict_cache": False})


async def run_worker(
    settings: ClassifySettings, url: str, stop: asyncio.Event, health: Health | None = None
) -> None:
    """Load the models, then lease, classify and answer until ``stop``."""
    worker = settings.worker
    if worker.token is None:
        raise SettingsError(
            "a remote worker needs its token: set PICTGUARD_CLASSIFY__WORKER__TOKEN (one of "
            "the server's classify.remote.workers tokens)"
        )
    engine = ClassifyEngine(
        worker_engine_settings(settings),
        SharedTables(MemoryTable("hashlists"), MemoryTable("cache")),
    )
    client = RemoteWorker(
        url,
        worker.token.get_secret_value(),
        engine,
        max_batch=worker.max_batch or settings.max_batch,
        pullers=worker.pullers,
        timeout_s=worker.timeout_s,
        ca_file=worker.ca_file,
        max_object_bytes=settings.max_object_bytes,
    )
    if health is not None:
        health.add("models", lambda: engine.ready)
        health.add("server reachable", lambda: client.connected)
    await engine.start()
    try:
        await client.run(stop)
    finally:
        await engine.stop()
