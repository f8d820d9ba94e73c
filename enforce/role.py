"""The enforce role: one consume loop over ``verdicts``."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from enforce.enforcer import OutcomeCallback
from enforce.settings import EnforceConfig
from enforce.stage import EnforceStage
from pipeline.context import RoleContext
from pipeline.stage import consume
from pipeline.topics import VERDICTS


async def tasks(
    ctx: RoleContext[EnforceConfig], on_outcome: OutcomeCallback | None = None
) -> list[Coroutine[Any, Any, None]]:
    """Start the enforcer (guard, notifications, quarantine check) and return its loop.

    ``on_outcome`` hears every verdict's final outcome (``pictguard scan`` counts them).
    """
    s = ctx.settings
    stage = EnforceStage(ctx.bus, s, ctx.stores, ctx.state, on_outcome=on_outcome)
    await stage.start()
    ctx.cleanups.push_async_callback(stage.stop)
    return [consume(ctx.bus, [s.topic(VERDICTS)], s.group("enforce"), stage, ctx.stop)]
