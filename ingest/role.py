"""The ingest role: every event source the ``ingest`` settings turn on, in one process.

All sources share one dedupe window, so an object notified through two paths (a MinIO Kafka
target and a webhook, say) is scanned once.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ingest.dedupe import DedupeWindow
from ingest.events_stage import run_events_stage
from ingest.reconcile import SqliteVerdicts, TableVerdicts, VerdictLookup, run_reconcile
from pipeline.bus.memory import MemoryBus

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger(__name__)


async def ingest_tasks(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """The loops of the ingest role; the caller runs them until ``runtime.stop``."""
    s = runtime.settings
    ing = s.ingest
    dedupe = DedupeWindow(ing.dedupe_window_s, ing.dedupe_max_entries)
    loops: list[Coroutine[Any, Any, None]] = []
    distributed = not isinstance(runtime.bus, MemoryBus)
    if ing.events.enabled and distributed:
        loops.append(run_events_stage(s, runtime.bus, runtime.stop, dedupe=dedupe))
    if ing.webhook.enabled:
        from ingest.webhook import run_webhook

        loops.append(run_webhook(s, runtime.bus, runtime.stop, dedupe=dedupe))
    if ing.sqs.enabled:
        from ingest.sqs import run_sqs

        loops.append(run_sqs(s, runtime.bus, runtime.stop, dedupe=dedupe))
    if ing.watch.enabled:
        from ingest.watch import run_watch

        if not ing.watch.roots:
            log.warning("ingest.watch is on but ingest.watch.roots is empty")
        for root in ing.watch.roots:
            loops.append(run_watch(s, runtime.bus, root, runtime.stop, dedupe=dedupe))
    if ing.reconcile.enabled:
        verdicts: VerdictLookup
        if distributed:
            from ingest.reconcile import run_verdict_index
            from pipeline.state.topic_table import TopicTable
            from pipeline.topics import OBJECT_VERDICTS

            table = TopicTable(runtime.bus, s.topic(OBJECT_VERDICTS))
            await table.start()
            runtime._closers.append(table.stop)
            loops.append(run_verdict_index(s, runtime.bus, table, runtime.stop))
            verdicts = TableVerdicts(table)
        else:
            verdicts = SqliteVerdicts(runtime.state)
        loops.append(
            run_reconcile(
                s, runtime.bus, runtime.stores, runtime.state, runtime.stop, verdicts=verdicts
            )
        )
    if not loops:
        log.warning(
            "ingest role has no source on: enable ingest.events (Kafka), ingest.webhook, "
            "ingest.sqs, ingest.watch or ingest.reconcile"
        )
    return loops
