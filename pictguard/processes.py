"""What the long-running and publishing commands run: ``serve``, ``run ROLE``, ``backfill``,
``reconcile``. (``scan`` has a module of its own: :mod:`pictguard.scan`.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pictguard.roles import (
    ROLES,
    api_loops,
    classify_loops,
    enforce_loops,
    feeds_loops,
    ingest_loops,
    verdict_ledger,
)
from pictguard.runtime import open_runtime, run_all, serve_metrics, stop_on_signals
from pictguard.settings import Settings
from pipeline.context import Mode
from pipeline.events import Decision
from pipeline.policy import DESTRUCTIVE
from pipeline.settings import SettingsError
from pipeline.sink import sink_loop
from pipeline.storage.locations import parse_location
from pipeline.topics import SCAN_BULK, TOPICS

log = logging.getLogger(__name__)


def unscanned_uploads(settings: Settings) -> list[str]:
    """Start-up warnings of ``serve`` about uploads that would be kept but never scanned.

    An upload accepted without a verdict (an ``accept`` policy of the API), or accepted
    flagged while enforce's policy removes such images, is dealt with only when something
    scans pict-rs's storage: a bucket notification source, the folder watcher or
    reconcile. Without one in this process it is never looked at again.
    """
    from validate_api.settings import rejected_decisions

    api, ingest = settings.api, settings.ingest
    policy = settings.enforce.action_policy()
    rejected = rejected_decisions(api, policy)
    warnings = []
    if Decision.FLAG_CSAM not in rejected:
        warnings.append(
            "api.reject leaves out flag_csam: uploads classified as CSAM are accepted, and "
            "pict-rs keeps and serves them until enforce acts on the stored object; put "
            "flag_csam back into api.reject unless you only evaluate pictguard"
        )
    accepting = [
        f"api.{name}=accept"
        for name in ("on_timeout", "on_error", "video", "on_overload")
        if getattr(api, name) == "accept"
    ]
    accepting += [
        f"{d.value} is accepted (api.reject) while enforce.on_{d.value}={policy.action_for(d)}"
        for d in (Decision.FLAG_CSAM, Decision.FLAG_NSFW)
        if d not in rejected and policy.action_for(d) in DESTRUCTIVE
    ]
    rescans = (
        ingest.webhook.enabled
        or ingest.sqs.enabled
        or (ingest.watch.enabled and bool(ingest.watch.roots))
        or (ingest.reconcile.enabled and bool(ingest.reconcile.locations))
    )
    if accepting and not rescans:
        warnings.append(
            "nothing rescans stored objects in this process, yet uploads can be accepted "
            f"unscanned or flagged ({'; '.join(accepting)}): pict-rs keeps them and pictguard "
            "never looks at them again. Turn on a rescan source for pict-rs's store — "
            "ingest.watch (enabled: true, roots: [<pict-rs files folder>]) for a filesystem "
            "store, ingest.reconcile (enabled: true, locations: [s3://<bucket>]) or bucket "
            "notifications (ingest.webhook, ingest.sqs) for object storage — or set those api "
            "policies to reject"
        )
    return warnings


async def run_role(settings: Settings, name: str) -> None:
    """Run one role on Kafka until SIGTERM."""
    role = ROLES.get(name)
    if role is None:
        raise SettingsError(f"unknown role {name!r}: choose {', '.join(ROLES)}")
    async with open_runtime(settings, mode=Mode.DISTRIBUTED, service=f"pictguard-{name}") as rt:
        stop_on_signals(rt.stop)
        if not role.own_health_port:
            await serve_metrics(rt, role.metrics_port)
        await rt.bus.ensure_topics([settings.topic(t.name) for t in TOPICS])
        loops = await role.start(rt)
        log.info("%s role running on Kafka at %s", name, settings.kafka.bootstrap_servers)
        rt.started.set()
        try:
            await run_all(loops, rt.stop)
        finally:
            rt.stop.set()
            await rt.aclose()
        log.info("%s role stopped", name)


async def run_serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    """Every role in this process on the in-process bus: API, classify, enforce, ingest,
    feeds."""
    from classify.role import start_engine

    for warning in unscanned_uploads(settings):
        log.warning(warning)
    remote = settings.classify.remote
    # Models only on remote workers: this process checks hash lists and the cache.
    only_remote = remote.enabled and not remote.local
    async with open_runtime(settings, mode=Mode.SINGLE) as rt:
        stop_on_signals(rt.stop)
        await rt.start_tables()
        lists_only = settings.classify.model_copy(update={"classifiers": ["hashlist"]})
        engine = await start_engine(rt, lists_only if only_remote else None)
        # Enforce first: it may refuse to start (a public quarantine location) before any
        # other loop exists.
        enforce = await enforce_loops(rt)
        loops = (
            ([] if only_remote else await classify_loops(rt, engine))
            + enforce
            + [sink_loop(settings, rt.bus, rt.state, rt.stop)]
            + await ingest_loops(rt)
            + await feeds_loops(rt)
        )
        loops += await api_loops(rt, engine, started)
        try:
            await run_all(loops, rt.stop)
        finally:
            rt.stop.set()
            await rt.aclose()


async def run_remote_worker(settings: Settings, url: str) -> None:
    """``pictguard run classify --remote URL``: classify for an instance over HTTPS, with no
    broker or storage of its own; ``/metrics`` and ``/readyz`` on ``metrics.port``."""
    from classify.remote.role import run_worker
    from classify.remote.worker import check_url
    from pipeline.health import Health, start_metrics_server
    from pipeline.telemetry import setup_tracing

    check_url(url)  # before any model loads: a refused URL is a one-line error at once
    stop = asyncio.Event()
    stop_on_signals(stop)
    tracing = setup_tracing("pictguard-classify-remote")
    health = Health()
    server = await start_metrics_server(settings.metrics, health)
    try:
        await run_worker(settings.classify, url, stop, health)
    finally:
        if server is not None:
            await server.close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)
    log.info("remote classify worker stopped")


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
    async with open_runtime(settings, mode=Mode.DISTRIBUTED, locations=[target]) as rt:
        stop_on_signals(rt.stop)
        store = rt.stores.for_location(location)
        await store.check()
        await rt.bus.ensure_topics([settings.topic(SCAN_BULK)])
        result = await Backfill(
            rt.bus, settings, store, location, rt.state, on_produced=on_listed, **options
        ).run(rt.stop, resume=resume)
        await rt.aclose()
        return result.produced


async def run_reconcile_once(settings: Settings, target: str) -> int:
    """One reconciliation pass over ``target``: enqueue objects changed since the last pass
    that have no verdict, as enforce's ledger (the ``object-verdicts`` topic) knows them."""
    from ingest.reconcile import reconcile_once

    if settings.storage.backend != "kafka":
        raise SettingsError(
            "pictguard reconcile publishes to Kafka (storage.backend: kafka); on a single box "
            "turn on ingest.reconcile for `pictguard serve`, or run `pictguard scan`"
        )
    location = parse_location(target)
    async with open_runtime(settings, mode=Mode.DISTRIBUTED, locations=[target]) as rt:
        stop_on_signals(rt.stop)
        await rt.stores.for_location(location).check()
        await rt.bus.ensure_topics([settings.topic(SCAN_BULK)])
        ledger = await verdict_ledger(rt)
        n = await reconcile_once(
            settings,
            rt.bus,
            rt.stores,
            rt.state,
            location,
            policy=settings.enforce.action_policy(),
            verdicts=ledger,
        )
        await rt.aclose()
        return n
