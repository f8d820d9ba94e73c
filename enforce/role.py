"""The enforce role: a consume loop over ``verdicts``, one over ``upload-evidence`` (rejected
uploads to keep), in distributed mode one over ``admin-requests`` (the API's admin
endpoints, run here with the same enforcer), and the verdict ledger it keeps for other
roles to query."""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from enforce.admin import EnforceContext
from enforce.admin_bus import AdminRequestHandler
from enforce.enforcer import OutcomeCallback
from enforce.ledger import LedgerWriter, TopicLedger
from enforce.notify.unverified import UnverifiedDigest
from enforce.preserve import EvidenceStage, UploadKeeper, retention_warnings
from enforce.quarantine import QuarantineError
from enforce.records import Records
from enforce.settings import EnforceConfig
from enforce.stage import EnforceStage
from pipeline.context import Mode, RoleContext
from pipeline.hashlists import Hasher, sha256_only
from pipeline.ledger import VerdictLedger
from pipeline.stage import consume
from pipeline.state.table import Table
from pipeline.topics import (
    ADMIN_REQUESTS,
    OBJECT_VERDICTS,
    UNVERIFIED,
    UPLOAD_EVIDENCE,
    VERDICTS,
)

Loops = list[Coroutine[Any, Any, None]]
log = logging.getLogger(__name__)


async def start_stage(
    ctx: RoleContext[EnforceConfig], on_outcome: OutcomeCallback | None = None
) -> EnforceStage:
    """Start the enforcer (guard, notifications, quarantine check); stopped with ``ctx``.

    ``on_outcome`` hears every verdict's final outcome (``pictguard scan`` counts them). On
    Kafka the stage also keeps the ``object-verdicts`` ledger topic current.
    """
    s = ctx.settings
    if ctx.mode is Mode.DISTRIBUTED and s.enforce.quarantines and s.enforce.quarantine is None:
        # Replicas each have their own state dir (an emptyDir in the chart): evidence would
        # be scattered over pods and lost with them, out of reach of `pictguard restore`.
        raise QuarantineError(
            "enforce.quarantine is not set: the enforce role on Kafka needs a quarantine "
            "location every replica and the admin commands share — set it to a private "
            "bucket (PICTGUARD_ENFORCE__QUARANTINE=s3://pictguard-quarantine/), or run "
            "with enforce.dry_run"
        )
    for warning in retention_warnings(s):
        log.warning(warning)
    ledger = None
    if ctx.mode is Mode.DISTRIBUTED:
        ledger = LedgerWriter(ctx.bus, s.topic(OBJECT_VERDICTS))
    stage = EnforceStage(ctx.bus, s, ctx.stores, ctx.state, on_outcome=on_outcome, ledger=ledger)
    await stage.start()
    ctx.cleanups.push_async_callback(stage.stop)
    # The kept uploads' table, and the evidence location checked like the quarantine.
    await UploadKeeper(stage.enforcer, s, ctx.stores).start()
    return stage


def stage_loops(
    ctx: RoleContext[EnforceConfig],
    stage: EnforceStage,
    *,
    hashlists: Table | None = None,
    media_roots: Sequence[Path] = (),
    hasher: Hasher = sha256_only,
) -> Loops:
    """The loops of a started stage.

    In distributed mode admin requests from the API are answered here too, with the same
    enforcer; ``hashlists`` is the table allow/block write to, ``media_roots`` the
    folders whose files the admin API may name (``ingest.watch.roots``) and ``hasher``
    hashes an image an admin names (classify's sha256 + PDQ, from the composition root).
    The API's counts of uploads accepted without a verdict become warnings on the admins'
    channels.
    """
    s = ctx.settings
    keeper = UploadKeeper(stage.enforcer, s, ctx.stores)
    digest = UnverifiedDigest(stage.enforcer.notifier, stage.enforcer.config.notify)
    loops = [
        consume(ctx.bus, [s.topic(VERDICTS)], s.group("enforce"), stage, ctx.stop),
        # Its own group: a burst of verdicts never holds up keeping an upload, nor the
        # reverse; few records per batch, each may be a whole upload.
        consume(
            ctx.bus,
            [s.topic(UPLOAD_EVIDENCE)],
            s.group("enforce-evidence"),
            EvidenceStage(keeper),
            ctx.stop,
            max_records=8,
        ),
        consume(ctx.bus, [s.topic(UNVERIFIED)], s.group("enforce-unverified"), digest, ctx.stop),
        digest.run(ctx.stop),
    ]
    if ctx.mode is Mode.DISTRIBUTED:
        admin = EnforceContext(
            s, ctx.stores, ctx.state, ctx.bus, hashlists, media_roots=media_roots, hasher=hasher
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


async def tasks(
    ctx: RoleContext[EnforceConfig],
    on_outcome: OutcomeCallback | None = None,
    *,
    hashlists: Table | None = None,
    media_roots: Sequence[Path] = (),
    hasher: Hasher = sha256_only,
) -> Loops:
    """Start the enforcer and return its loops (see :func:`start_stage`, :func:`stage_loops`)."""
    stage = await start_stage(ctx, on_outcome)
    return stage_loops(ctx, stage, hashlists=hashlists, media_roots=media_roots, hasher=hasher)


async def ledger(ctx: RoleContext[EnforceConfig]) -> VerdictLedger:
    """The verdict ledger for another role of this process (reconcile) to query.

    One process: enforce's own records in the state file. Distributed: the compacted
    ``object-verdicts`` topic enforce keeps, loaded now and followed until ``ctx`` closes.
    """
    if ctx.mode is Mode.DISTRIBUTED:
        from pipeline.state.topic_table import TopicTable

        table = TopicTable(ctx.bus, ctx.settings.topic(OBJECT_VERDICTS))
        await table.start()
        ctx.cleanups.push_async_callback(table.stop)
        return TopicLedger(table)
    records = Records(ctx.state)
    await records.start()
    return records
