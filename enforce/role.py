"""The enforce role: a consume loop over ``verdicts``, and in distributed mode one over
``admin-requests`` (the API's admin endpoints, run here with the same enforcer)."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from enforce.admin import EnforceContext
from enforce.admin_bus import AdminRequestHandler
from enforce.enforcer import OutcomeCallback
from enforce.settings import EnforceConfig
from enforce.stage import EnforceStage
from pipeline.context import Mode, RoleContext
from pipeline.stage import consume
from pipeline.state.table import Table
from pipeline.topics import ADMIN_REQUESTS, VERDICTS


async def tasks(
    ctx: RoleContext[EnforceConfig],
    on_outcome: OutcomeCallback | None = None,
    *,
    hashlists: Table | None = None,
    media_roots: Sequence[Path] = (),
) -> list[Coroutine[Any, Any, None]]:
    """Start the enforcer (guard, notifications, quarantine check) and return its loops.

    ``on_outcome`` hears every verdict's final outcome (``pictguard scan`` counts them).
    In distributed mode admin requests from the API are answered here too, with the same
    enforcer; ``hashlists`` is the table allow/block write to and ``media_roots`` the
    folders whose files the admin API may name (``ingest.watch.roots``).
    """
    s = ctx.settings
    stage = EnforceStage(ctx.bus, s, ctx.stores, ctx.state, on_outcome=on_outcome)
    await stage.start()
    ctx.cleanups.push_async_callback(stage.stop)
    loops = [consume(ctx.bus, [s.topic(VERDICTS)], s.group("enforce"), stage, ctx.stop)]
    if ctx.mode is Mode.DISTRIBUTED:
        admin = EnforceContext(
            s, ctx.stores, ctx.state, ctx.bus, hashlists, media_roots=media_roots
        )
        handler = AdminRequestHandler(admin, stage.enforcer)
        loops.append(
            consume(
                ctx.bus,
                [s.topic(ADMIN_REQUESTS)],
                s.group("enforce-admin"),
                handler,
                ctx.stop,
                low_latency=True,
            )
        )
    return loops
