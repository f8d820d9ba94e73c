"""The registry of roles: what ``pictguard run ROLE`` runs, and how ``serve`` composes them.

Each role package exports what it runs (``classify.role.tasks``, ``enforce.role.tasks``,
``ingest.role.tasks``, ``validate_api.role.build_app``); this module is the one place that
hands them each other's pieces (the classify engine to the API's fast path, enforce's admin
endpoints and action policy to the API and ingest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pictguard.runtime import Runtime

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from classify.engine import ClassifyEngine
    from classify.fastpath import FastPath
    from classify.remote.role import RemoteServer
    from enforce.stage import EnforceStage
    from pipeline.ledger import VerdictLedger

Loops = list[Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Role:
    """One deployable role."""

    name: str
    summary: str
    start: Callable[[Runtime], Awaitable[Loops]]
    # The API serves /healthz, /readyz and /metrics on its own port; the others on
    # ``metrics.port``, by default this one (each its own, so roles can share a host).
    own_health_port: bool = False
    metrics_port: int = 0


async def classify_loops(runtime: Runtime, engine: ClassifyEngine | None = None) -> Loops:
    from classify import role

    await runtime.start_tables()
    return await role.tasks(runtime, engine)


async def enforce_stage(runtime: Runtime, on_outcome: Any = None) -> tuple[EnforceStage, Loops]:
    """The started enforce stage (for what it reports at the end of a scan) and its loop."""
    from classify.decode import entry_hashes
    from enforce import role

    await runtime.start_tables()
    stage = await role.start_stage(runtime, on_outcome)
    loops = role.stage_loops(
        runtime,
        stage,
        hashlists=runtime.tables.hashlists,
        media_roots=runtime.settings.ingest.watch.roots,
        hasher=entry_hashes,
    )
    return stage, loops


async def enforce_loops(runtime: Runtime, on_outcome: Any = None) -> Loops:
    return (await enforce_stage(runtime, on_outcome))[1]


async def feeds_loops(runtime: Runtime) -> Loops:
    """Pull subscribed hash-list feeds (and publish this instance's) on an interval."""
    from classify.feeds import role

    await runtime.start_tables()
    return await role.tasks(runtime)


async def verdict_ledger(runtime: Runtime) -> VerdictLedger:
    """Enforce's verdict ledger, for reconcile (enforce's records in one process, the
    ``object-verdicts`` topic on Kafka)."""
    from enforce import role

    return await role.ledger(runtime)


async def ingest_loops(runtime: Runtime) -> Loops:
    from ingest import role

    s = runtime.settings
    ledger = await verdict_ledger(runtime) if s.ingest.reconcile.enabled else None
    return await role.tasks(runtime, s.enforce.action_policy(), ledger)


async def admin_endpoints(runtime: Runtime) -> APIRouter | None:
    """Enforce's admin endpoints: over this process's state when enforce runs here
    (``serve``), with the review console (``/admin/review``) beside them; in distributed
    mode sent to the enforce role over the bus, so its guard, held actions and audit are
    the only ones (the console then runs in the enforce pod: ``pictguard review``)."""
    from fastapi import APIRouter

    from classify.decode import entry_hashes
    from enforce.admin import EnforceContext, static_context
    from enforce.admin_api import admin_router
    from enforce.review.app import review_router
    from pipeline.context import Mode

    s = runtime.settings
    if runtime.mode is Mode.DISTRIBUTED and s.enforce.admin_token is not None:
        from enforce.admin_bus import AdminClient
        from pipeline.topics import ADMIN_REPLIES, ADMIN_REQUESTS

        client = AdminClient(
            runtime.bus,
            s.topic(ADMIN_REQUESTS),
            s.topic(ADMIN_REPLIES + s.api.replica_id),
            s.group(f"api-admin-{s.api.replica_id}"),
            timeout_s=s.enforce.admin_timeout_s,
        )
        await client.start()
        runtime.cleanups.push_async_callback(client.stop)
        return admin_router(None, token=s.enforce.admin_token, backend=client)
    context = EnforceContext(
        s,
        runtime.stores,
        runtime.state,
        runtime.bus,
        runtime.tables.hashlists,
        media_roots=s.ingest.watch.roots,
        hasher=entry_hashes,
    )
    endpoints = APIRouter()
    endpoints.include_router(admin_router(static_context(context), token=s.enforce.admin_token))
    endpoints.include_router(review_router(static_context(context), settings=s.enforce))
    return endpoints


async def fast_path(runtime: Runtime, engine: ClassifyEngine | None = None) -> FastPath:
    """Hash lists and the verdict cache without a model run, for the API (and the remote
    workers' server); ``engine`` is the classify engine when one runs in this process."""
    from classify.engine import ClassifyEngine
    from classify.fastpath import FastPath

    s = runtime.settings
    await runtime.start_tables()
    if engine is None:
        # Distributed: the lists here, the models on the classify workers.
        only_lists = s.classify.model_copy(
            update={"classifiers": ["hashlist"], "verdict_cache": False}
        )
        lists = ClassifyEngine(only_lists, runtime.tables)
        await lists.start()
        runtime.cleanups.push_async_callback(lists.stop)
        return FastPath(lists, elsewhere=True)
    if s.classify.remote.enabled:
        # Models on remote workers (and maybe here): their verdicts are cached under their
        # versions; the sync lane decides who classifies a miss.
        return FastPath(engine, elsewhere=not engine.models)
    # This process classifies every miss itself.
    return FastPath(engine, local=True)


async def build_api(
    runtime: Runtime,
    engine: ClassifyEngine | None = None,
    *,
    fast: FastPath | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The API app; ``engine`` is the classify engine when classify runs in this process."""
    from validate_api.role import build_app

    if fast is None:
        fast = await fast_path(runtime, engine)
    return await build_app(
        runtime,
        fast,
        admin_router=await admin_endpoints(runtime),
        routers=routers,
        policy=runtime.settings.enforce.action_policy(),
    )


async def remote_server(
    runtime: Runtime, fast: FastPath, *, local_classifier: bool
) -> RemoteServer:
    """The remote workers' server side (``classify.remote``) over this process's bus."""
    from classify.remote.role import server

    await runtime.start_tables()
    return await server(
        runtime,
        fast,
        local_classifier=local_classifier,
        admin_token=runtime.settings.enforce.admin_token,
    )


async def api_loops(
    runtime: Runtime,
    engine: ClassifyEngine | None = None,
    started: asyncio.Event | None = None,
) -> Loops:
    """The API's server loop (and, with ``classify.remote.enabled``, the loops that lease
    scan requests to remote workers); ``started`` is set once it listens."""
    from validate_api.role import http_limits, serve_http

    s = runtime.settings
    fast = await fast_path(runtime, engine)
    loops: Loops = []
    routers: list[APIRouter] = []
    if s.classify.remote.enabled:
        remote = await remote_server(
            runtime,
            fast,
            local_classifier=bool(engine is not None and engine.models) or s.classify.remote.local,
        )
        loops += remote.loops
        routers.append(remote.router)
    app = await build_api(runtime, engine, fast=fast, routers=routers)
    serving = serve_http(
        app, s.api.host, s.api.port, runtime.stop, started, limits=http_limits(s.api)
    )
    return [serving, *loops]


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role(
            "ingest",
            "bucket notifications, webhooks, SQS, watcher, reconcile",
            ingest_loops,
            metrics_port=9101,
        ),
        Role(
            "classify",
            "decode, hash, hash lists, models → verdicts",
            classify_loops,
            metrics_port=9102,
        ),
        Role(
            "enforce",
            "quarantine, delete or report; notify; audit",
            enforce_loops,
            metrics_port=9103,
        ),
        Role("api", "pict-rs upload validation and the scan API", api_loops, True),
        Role("feeds", "pull subscribed hash-list feeds, publish this instance's", feeds_loops),
    )
}
