"""Periodic reconciliation: scan what the event path missed.

Each run lists the location, keeps objects modified since the last checkpoint (minus an
overlap for clock skew and in-flight writes) and older than ``min_age_s`` (younger ones are
the event path's job and the next run's), and enqueues those without a verdict for their
current version (``source=reconcile``). It catches events lost while anything was down, and
is the only source for stores without notifications (Garage, SeaweedFS S3).

S3 has no "modified since" listing, so every run lists the whole prefix; the checkpoint
bounds what is *enqueued*, not what is listed.

"Without a verdict" is asked of the verdict ledger enforce keeps
(:class:`pipeline.ledger.VerdictLedger`), which the composition root hands in: enforce's
records in one process, the compacted ``object-verdicts`` topic when distributed.

A verdict covers an object when it is for the same eTag (where both are known) and is
final: ``allow``; a flag while enforcement only reports (a still-present flagged object in
delete or quarantine mode means enforcement did not happen, or the bytes came back); or an
error that a retry cannot fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ingest.filters import KeyFilter
from ingest.settings import IngestConfig
from pipeline import metrics
from pipeline.bus.base import Bus, BusError, Outgoing
from pipeline.events import (
    Decision,
    ErrorReason,
    Lane,
    ObjectRef,
    ScanRequest,
    Source,
    encode,
)
from pipeline.ledger import KnownVerdict, VerdictLedger
from pipeline.policy import ActionPolicy
from pipeline.retry import pause
from pipeline.storage.base import StorageError
from pipeline.storage.locations import Location, LocationNotAllowed, Stores, parse_location
from pipeline.topics import SCAN_BULK
from pipeline.tracing import inject_headers, tracer

log = logging.getLogger(__name__)

# Error verdicts a later attempt may turn into a real one.
TRANSIENT_ERRORS = frozenset(
    {ErrorReason.FETCH_FAILED, ErrorReason.TIMEOUT, ErrorReason.MODEL_FAILED, ErrorReason.NOT_FOUND}
)


class Checkpoints(Protocol):
    """Where a run's checkpoint is kept (:class:`SqliteState` is one)."""

    async def get_checkpoint(self, name: str) -> str | None: ...

    async def set_checkpoint(self, name: str, value: str) -> None: ...


def covered(
    ref: ObjectRef, verdicts: Sequence[KnownVerdict], settings: IngestConfig, policy: ActionPolicy
) -> bool:
    """Whether one of ``verdicts`` makes scanning ``ref`` again pointless.

    A flagged object still present is covered unless ``policy`` (enforce's) removes such
    objects: then enforcement did not happen, or the bytes came back.
    """
    for v in verdicts:
        if ref.etag and v.etag and ref.etag != v.etag:
            continue  # a verdict on earlier bytes of this key
        if v.decision == Decision.ALLOW.value:
            return True
        if v.decision in (Decision.FLAG_CSAM.value, Decision.FLAG_NSFW.value):
            if not policy.destructive(Decision(v.decision)):
                return True
            continue
        if v.decision == Decision.ERROR.value:
            retry = settings.ingest.reconcile.retry_errors and v.reason in {
                r.value for r in TRANSIENT_ERRORS
            }
            if not retry:
                return True
    return False


def checkpoint_name(location: Location) -> str:
    return f"reconcile:{location}"


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(slots=True)
class ReconcileResult:
    """What one run saw and did."""

    listed: int = 0
    in_window: int = 0
    filtered: int = 0
    covered: int = 0
    produced: int = 0


async def reconcile_once(
    settings: IngestConfig,
    bus: Bus,
    stores: Stores,
    state: Checkpoints,
    location: Location | str,
    *,
    policy: ActionPolicy,
    verdicts: VerdictLedger,
    now: datetime | None = None,
    result: ReconcileResult | None = None,
) -> int:
    """One reconcile run over ``location``; returns the number of scan requests produced.

    ``policy`` is enforce's action policy (``EnforceSettings.action_policy()``) and
    ``verdicts`` the verdict ledger enforce keeps. The checkpoint moves only after every
    scan request was acknowledged, so a failed run is simply repeated.
    """
    where = parse_location(location) if isinstance(location, str) else location
    rec = settings.ingest.reconcile
    result = result if result is not None else ReconcileResult()
    moment = now or datetime.now(UTC)
    name = checkpoint_name(where)
    saved = await state.get_checkpoint(name)
    last = _parse_time(saved) if saved else None
    if last is not None:
        low: datetime | None = last - timedelta(seconds=rec.overlap_s)
    elif rec.initial_lookback_s is not None:
        low = moment - timedelta(seconds=rec.initial_lookback_s)
    else:
        low = None  # first run: every object without a verdict
    high = moment - timedelta(seconds=rec.min_age_s)
    key_filter = KeyFilter.from_settings(settings.ingest)
    store = stores.for_location(where)
    if store.hides(where.prefix):
        raise LocationNotAllowed(
            f"{where} lies in the quarantine location; pictguard never reconciles its own "
            "quarantine — remove it from ingest.reconcile.locations"
        )
    topic = settings.topic(SCAN_BULK)

    batch: list[ObjectRef] = []

    async def flush() -> None:
        if not batch:
            return
        known = await verdicts.known(batch)
        headers = inject_headers()
        outgoing: list[Outgoing] = []
        for ref in batch:
            if covered(ref, known.get(ref.id, ()), settings, policy):
                result.covered += 1
                continue
            request = ScanRequest(lane=Lane.BULK, source=Source.RECONCILE, object=ref)
            outgoing.append(Outgoing(topic, encode(request), ref.id.encode(), headers))
        if outgoing:
            await bus.produce_many(outgoing)
            metrics.record_scan_requests(Source.RECONCILE, Lane.BULK, len(outgoing))
        result.produced += len(outgoing)
        batch.clear()

    with tracer.start_as_current_span("ingest.reconcile"):
        async for info in store.list(where.prefix):
            result.listed += 1
            modified = info.last_modified
            if modified is not None:
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                if (low is not None and modified < low) or modified >= high:
                    continue
            result.in_window += 1
            skip = key_filter.rejection(
                info.key, size=info.size, store=store.kind, root=store.location
            )
            if skip is not None:
                result.filtered += 1
                continue
            batch.append(store.ref(info.key, info))
            if len(batch) >= settings.ingest.batch_size:
                await flush()
        await flush()
    await state.set_checkpoint(name, high.isoformat())
    log.info(
        "reconciled %s: %d listed, %d modified in the window, %d skipped by the filters, "
        "%d already scanned, %d enqueued",
        where,
        result.listed,
        result.in_window,
        result.filtered,
        result.covered,
        result.produced,
        extra={"location": str(where), "enqueued": result.produced},
    )
    return result.produced


async def run_reconcile(
    settings: IngestConfig,
    bus: Bus,
    stores: Stores,
    state: Checkpoints,
    stop: asyncio.Event,
    *,
    policy: ActionPolicy,
    verdicts: VerdictLedger,
    locations: Sequence[str] | None = None,
) -> None:
    """Reconcile every ``ingest.reconcile.locations`` entry each ``interval_s`` until ``stop``.

    A failing location (store or bus unreachable) is logged and tried again next round.
    """
    rec = settings.ingest.reconcile
    targets = [parse_location(t) for t in (locations or rec.locations)]
    if not targets:
        log.warning("reconcile is on but ingest.reconcile.locations is empty; nothing to do")
        return
    while not stop.is_set():
        for target in targets:
            if stop.is_set():
                return
            try:
                await reconcile_once(
                    settings, bus, stores, state, target, policy=policy, verdicts=verdicts
                )
            except (StorageError, BusError) as exc:
                log.error("reconcile of %s failed, will retry next round: %s", target, exc)
        await pause(stop, rec.interval_s)
