"""The ingest role: every event source the ``ingest`` settings turn on, in one process.

All sources share one dedupe window, so an object notified through two paths (a MinIO Kafka
target and a webhook, say) is scanned once. All share the process's storage scope too
(``ctx.stores.scope``): notifications about buckets or folders outside
``storage.allowed_locations`` are dead-lettered, and the quarantine location is never
listed, watched or scanned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ingest.dedupe import DedupeWindow
from ingest.events_stage import run_events_stage
from ingest.reconcile import run_reconcile
from ingest.settings import IngestConfig
from pipeline.context import Mode, RoleContext
from pipeline.ledger import VerdictLedger
from pipeline.policy import ActionPolicy
from pipeline.settings import SettingsError

log = logging.getLogger(__name__)


async def tasks(
    ctx: RoleContext[IngestConfig], policy: ActionPolicy, ledger: VerdictLedger | None = None
) -> list[Coroutine[Any, Any, None]]:
    """The loops of the ingest role; the caller runs them until ``ctx.stop``.

    ``policy`` is enforce's action policy: reconcile rescans a flagged object still present
    only when that policy would have removed it. ``ledger`` is the verdict ledger enforce
    keeps, which reconcile asks what was scanned (needed when ``ingest.reconcile`` is on).
    """
    s = ctx.settings
    ing = s.ingest
    scope = ctx.stores.scope
    dedupe = DedupeWindow(ing.dedupe_window_s, ing.dedupe_max_entries)
    loops: list[Coroutine[Any, Any, None]] = []
    distributed = ctx.mode is Mode.DISTRIBUTED
    receivers = [
        name for name, on in (("webhook", ing.webhook.enabled), ("sqs", ing.sqs.enabled)) if on
    ]
    if receivers and not scope.restricted:
        # Anyone who can reach a receiver could otherwise have any bucket scanned and acted on.
        raise SettingsError(
            f"ingest.{receivers[0]} is on but no location is allowed: set "
            "storage.allowed_locations to the buckets (and folders) whose notifications "
            "pictguard may act on, e.g. PICTGUARD_STORAGE__ALLOWED_LOCATIONS="
            "'[\"s3://media\"]'"
        )
    if ing.events.enabled and distributed:
        if not scope.restricted:
            log.warning(
                "storage.allowed_locations is empty: the bucket-events topic may name any "
                "bucket; set it to the buckets pictguard protects"
            )
        loops.append(run_events_stage(s, ctx.bus, ctx.stop, dedupe=dedupe, scope=scope))
    if ing.webhook.enabled:
        from ingest.webhook import run_webhook

        loops.append(run_webhook(s, ctx.bus, ctx.stop, dedupe=dedupe, scope=scope))
    if ing.sqs.enabled:
        from ingest.sqs import run_sqs

        loops.append(run_sqs(s, ctx.bus, ctx.stop, dedupe=dedupe, scope=scope))
    if ing.watch.enabled:
        from ingest.watch import run_watch

        if not ing.watch.roots:
            log.warning("ingest.watch is on but ingest.watch.roots is empty")
        for root in ing.watch.roots:
            # /readyz waits until every watch is in place: files written before are only
            # found by a scan or reconcile.
            watching = asyncio.Event()
            ctx.health.add(f"watch {root}", watching.is_set)
            loops.append(
                run_watch(s, ctx.bus, root, ctx.stop, dedupe=dedupe, started=watching, scope=scope)
            )
    if ing.reconcile.enabled:
        if ledger is None:
            raise ValueError("ingest.reconcile is on but no verdict ledger was handed in")
        loops.append(
            run_reconcile(
                s, ctx.bus, ctx.stores, ctx.state, ctx.stop, policy=policy, verdicts=ledger
            )
        )
    if not loops:
        log.warning(
            "ingest role has no source on: enable ingest.events (Kafka), ingest.webhook, "
            "ingest.sqs, ingest.watch or ingest.reconcile"
        )
    return loops
