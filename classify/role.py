"""The classify role: the engine and one consume loop per lane, sync lane first."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from classify.engine import ClassifyEngine
from classify.settings import ClassifyConfig, ClassifySettings
from classify.stage import ClassifyStage
from pipeline.context import RoleContext
from pipeline.stage import consume
from pipeline.topics import SCAN_BULK, SCAN_SYNC


async def start_engine(
    ctx: RoleContext[ClassifyConfig], settings: ClassifySettings | None = None
) -> ClassifyEngine:
    """Load the models and hash lists (per ``settings``, default the ``classify`` section);
    ``/readyz`` waits for them."""
    engine = ClassifyEngine(settings or ctx.settings.classify, ctx.tables)
    ctx.health.add("models", lambda: engine.ready)
    await engine.start()
    ctx.cleanups.push_async_callback(engine.stop)
    return engine


async def tasks(
    ctx: RoleContext[ClassifyConfig], engine: ClassifyEngine | None = None
) -> list[Coroutine[Any, Any, None]]:
    """The consume loops of the role; ``engine`` is shared with the API in one process."""
    s = ctx.settings
    if engine is None:
        engine = await start_engine(ctx)
    stage = ClassifyStage(ctx.bus, s, ctx.stores, engine)
    # One consumer per lane, so a bulk backlog never delays an upload waiting for its answer.
    lanes = (
        (SCAN_SYNC, "classify-sync", s.classify.sync_inflight_batches, True),
        (SCAN_BULK, "classify", s.classify.inflight_batches, False),
    )
    return [
        consume(
            ctx.bus,
            [s.topic(topic)],
            s.group(name),
            stage,
            ctx.stop,
            max_records=s.classify.fetch_batch,
            max_inflight=inflight,
            low_latency=low_latency,
        )
        for topic, name, inflight, low_latency in lanes
    ]
