"""Periodic reconciliation: scan what the event path missed.

Each run lists the location, keeps objects modified since the last checkpoint (minus an
overlap for clock skew and in-flight writes) and older than ``min_age_s`` (younger ones are
the event path's job and the next run's), and enqueues those without a verdict for their
current version (``source=reconcile``). It catches events lost while anything was down, and
is the only source for stores without notifications (Garage, SeaweedFS S3).

S3 has no "modified since" listing, so every run lists the whole prefix; the checkpoint
bounds what is *enqueued*, not what is listed.

"Without a verdict" is asked of a :class:`VerdictLookup`:

- single process: :class:`SqliteVerdicts` reads the ``verdicts`` table enforce records;
- distributed: :class:`TableVerdicts` reads the compacted ``object-verdicts`` table, which
  :class:`VerdictIndexer` (run by the ingest role) keeps from the ``verdicts`` topic: the
  latest verdict's eTag, decision and reason per object id.

A verdict covers an object when it is for the same eTag (where both are known) and is
final: ``allow``; a flag while enforcement only reports (a still-present flagged object in
delete or quarantine mode means enforcement did not happen, or the bytes came back); or an
error that a retry cannot fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ingest.filters import KeyFilter
from ingest.settings import IngestConfig
from pipeline import metrics
from pipeline.bus.base import Bus, BusError, Message, Outgoing
from pipeline.events import (
    Decision,
    ErrorReason,
    Lane,
    ObjectRef,
    ScanRequest,
    SchemaError,
    Source,
    Verdict,
    decode,
    encode,
)
from pipeline.policy import ActionPolicy
from pipeline.retry import pause
from pipeline.stage import consume
from pipeline.state.sqlite import SqliteState
from pipeline.state.table import Table
from pipeline.storage.base import StorageError
from pipeline.storage.locations import Location, Stores, parse_location
from pipeline.topics import SCAN_BULK, VERDICTS
from pipeline.tracing import inject_headers, tracer

log = logging.getLogger(__name__)

# Error verdicts a later attempt may turn into a real one.
TRANSIENT_ERRORS = frozenset(
    {ErrorReason.FETCH_FAILED, ErrorReason.TIMEOUT, ErrorReason.MODEL_FAILED, ErrorReason.NOT_FOUND}
)
INDEX_GROUP = "ingest-verdict-index"
_LOOKUP_CHUNK = 500


class Checkpoints(Protocol):
    """Where a run's checkpoint is kept (:class:`SqliteState` is one)."""

    async def get_checkpoint(self, name: str) -> str | None: ...

    async def set_checkpoint(self, name: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class KnownVerdict:
    """The part of a verdict reconcile needs."""

    etag: str | None
    decision: str
    reason: str | None

    def to_bytes(self) -> bytes:
        return json.dumps({"e": self.etag, "d": self.decision, "r": self.reason}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KnownVerdict:
        raw = json.loads(data)
        return cls(etag=raw.get("e"), decision=str(raw["d"]), reason=raw.get("r"))

    @classmethod
    def of(cls, verdict: Verdict) -> KnownVerdict:
        return cls(
            etag=verdict.object.etag if verdict.object else None,
            decision=verdict.decision.value,
            reason=verdict.reason.value if verdict.reason else None,
        )


class VerdictLookup(Protocol):
    """Which objects already have a verdict for their current version."""

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        """Verdicts per object id, for those of ``refs`` that have any."""
        ...


class SqliteVerdicts:
    """Single-process lookup in the ``verdicts`` table of the state file."""

    def __init__(self, state: SqliteState) -> None:
        self.state = state

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        found: dict[str, list[KnownVerdict]] = {}
        ids = [r.id for r in refs]
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self.state.fetchall(
                f"SELECT object_id, decision, reason, body FROM verdicts "  # noqa: S608 — placeholders only
                f"WHERE object_id IN ({marks})",
                chunk,
            )
            for object_id, decision, reason, body in rows:
                etag = None
                with contextlib.suppress(ValueError, AttributeError):
                    etag = (json.loads(body).get("object") or {}).get("etag")
                found.setdefault(str(object_id), []).append(
                    KnownVerdict(etag=etag, decision=str(decision), reason=reason)
                )
        return found


class TableVerdicts:
    """Lookup in a table of the latest verdict per object id (``object-verdicts``)."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        found: dict[str, list[KnownVerdict]] = {}
        for ref in refs:
            value = await self.table.get(ref.id)
            if value:
                try:
                    found[ref.id] = [KnownVerdict.from_bytes(value)]
                except (ValueError, KeyError, TypeError):
                    continue  # unreadable entry: treat as no verdict, rescanning is safe
        return found


class VerdictIndexer:
    """Batch handler on ``verdicts``: keeps the latest verdict per object in ``table``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def handle(self, batch: Sequence[Message]) -> None:
        latest: dict[str, KnownVerdict] = {}
        for message in batch:
            try:
                verdict = decode(message.value, Verdict)
            except SchemaError:
                continue  # not ours to dead-letter: enforce reads the same topic and does
            if verdict.object is not None:
                latest[verdict.object.id] = KnownVerdict.of(verdict)
        for object_id, known in latest.items():
            await self.table.put(object_id, known.to_bytes())


async def run_verdict_index(
    settings: IngestConfig,
    bus: Bus,
    table: Table,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Follow ``verdicts`` into ``table`` as group ``<group_prefix>ingest-verdict-index``."""
    await consume(
        bus,
        [settings.topic(VERDICTS)],
        settings.group(INDEX_GROUP),
        VerdictIndexer(table),
        stop,
        started=started,
    )


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
    verdicts: VerdictLookup | None = None,
    now: datetime | None = None,
    result: ReconcileResult | None = None,
) -> int:
    """One reconcile run over ``location``; returns the number of scan requests produced.

    ``policy`` is enforce's action policy (``EnforceSettings.action_policy()``).

    ``verdicts`` defaults to the ``verdicts`` table of ``state`` (a :class:`SqliteState`).
    The checkpoint moves only after every scan request was acknowledged, so a failed run is
    simply repeated.
    """
    where = parse_location(location) if isinstance(location, str) else location
    if verdicts is None:
        if not isinstance(state, SqliteState):
            raise TypeError("reconcile_once needs verdicts= unless state is a SqliteState")
        verdicts = SqliteVerdicts(state)
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
            if key_filter.rejection(info.key, size=info.size) is not None:
                result.filtered += 1
                continue
            batch.append(store.ref(info.key, info))
            if len(batch) >= settings.ingest.batch_size:
                await flush()
        await flush()
    await state.set_checkpoint(name, high.isoformat())
    log.info(
        "reconciled %s: %d listed, %d modified in the window, %d already scanned, %d enqueued",
        where,
        result.listed,
        result.in_window,
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
    verdicts: VerdictLookup | None = None,
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
