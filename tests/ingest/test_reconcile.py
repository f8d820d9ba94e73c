"""Reconciliation: objects whose event was lost are found and scanned; scanned ones are not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enforce.ledger import LedgerWriter, TopicLedger
from enforce.records import Records
from ingest.events_stage import run_events_stage
from ingest.reconcile import ReconcileResult, checkpoint_name, reconcile_once
from pictguard.settings import Settings
from pipeline.bus.base import Outgoing
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.events import Decision, ErrorReason, ObjectRef, Source, StoreKind, Verdict
from pipeline.state.sqlite import SqliteState
from pipeline.state.topic_table import TopicTable
from pipeline.storage.locations import Stores, parse_location
from pipeline.topics import BUCKET_EVENTS, OBJECT_VERDICTS
from tests.ingest import payloads as p
from tests.ingest.helpers import Stored, put_objects, scan_requests
from tests.servers import S3Server


def reconciling(settings: Settings, **rec: object) -> Settings:
    ingest = settings.ingest.model_dump()
    ingest["reconcile"] = {"enabled": True, "min_age_s": 0, "overlap_s": 0, **rec}
    return settings.model_copy(update={"ingest": type(settings.ingest).model_validate(ingest)})


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    await s.start()
    await Records(s).start()
    yield s
    await s.stop()


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    s = Stores(settings.s3)
    yield s
    await s.close()


def verdict(bucket: str, obj: Stored, decision: Decision, **kw: object) -> Verdict:
    ref = ObjectRef(store=StoreKind.S3, bucket=bucket, key=obj.key, etag=obj.etag, size=obj.size)
    return Verdict(request_id="r", object=ref, decision=decision, **kw)  # type: ignore[arg-type]


async def test_finds_the_object_whose_event_was_dropped(
    settings: Settings,
    kafka_bus: KafkaBus,
    s3_server: S3Server,
    bucket: str,
    state: SqliteState,
    stores: Stores,
) -> None:
    st = put_objects(s3_server, bucket, ["a.jpg", "b.jpg", "lost.jpg"])
    topic = settings.topic(BUCKET_EVENTS)
    # MinIO notified a.jpg and b.jpg; the event for lost.jpg never arrived.
    await kafka_bus.produce_many(
        [
            Outgoing(topic, p.minio_event(bucket, k, size=st[k].size, etag=st[k].etag), None)
            for k in ("a.jpg", "b.jpg")
        ]
    )
    stop = asyncio.Event()
    stage = asyncio.create_task(run_events_stage(settings, kafka_bus, stop))
    try:
        from_events = await scan_requests(kafka_bus, settings, at_least=2)
    finally:
        stop.set()
        await stage
    # classify and enforce did their work on what the events asked for
    records = Records(state)
    for request in from_events:
        assert request.object is not None
        await records.record_verdict(verdict(bucket, st[request.object.key], Decision.ALLOW))

    configured = reconciling(settings)
    n = await reconcile_once(
        configured,
        kafka_bus,
        stores,
        state,
        f"s3://{bucket}",
        verdicts=Records(state),
        policy=configured.enforce.action_policy(),
    )

    assert n == 1
    requests = await scan_requests(kafka_bus, settings, at_least=3)
    reconciled = [r for r in requests if r.source is Source.RECONCILE]
    assert [r.object.key for r in reconciled if r.object] == ["lost.jpg"]
    assert reconciled[0].object is not None and reconciled[0].object.etag == st["lost.jpg"].etag


async def test_which_verdicts_count_as_scanned(
    settings: Settings,
    kafka_bus: KafkaBus,
    s3_server: S3Server,
    bucket: str,
    state: SqliteState,
    stores: Stores,
) -> None:
    keys = ["allowed.jpg", "overwritten.jpg", "fetch-failed.jpg", "undecodable.bin", "csam.jpg"]
    st = put_objects(s3_server, bucket, keys)
    records = Records(state)
    await records.record_verdict(verdict(bucket, st["allowed.jpg"], Decision.ALLOW))
    old = Stored("overwritten.jpg", 3, "0" * 32)  # a verdict on earlier bytes of the key
    await records.record_verdict(verdict(bucket, old, Decision.ALLOW))
    await records.record_verdict(
        verdict(bucket, st["fetch-failed.jpg"], Decision.ERROR, reason=ErrorReason.FETCH_FAILED)
    )
    await records.record_verdict(
        verdict(bucket, st["undecodable.bin"], Decision.ERROR, reason=ErrorReason.UNDECODABLE)
    )
    await records.record_verdict(verdict(bucket, st["csam.jpg"], Decision.FLAG_CSAM))

    # Quarantine is on, yet the flagged object is still there: enforcement must run again.
    result = ReconcileResult()
    n = await reconcile_once(
        reconciling(settings),
        kafka_bus,
        stores,
        state,
        f"s3://{bucket}",
        verdicts=Records(state),
        policy=settings.enforce.action_policy(),
        result=result,
    )
    requests = await scan_requests(kafka_bus, settings, at_least=n)
    assert sorted(r.object.key for r in requests if r.object) == [
        "csam.jpg",
        "fetch-failed.jpg",
        "overwritten.jpg",
    ]
    assert (result.listed, result.covered, result.produced) == (5, 2, 3)


async def test_checkpoint_bounds_what_the_next_run_considers(
    settings: Settings,
    kafka_bus: KafkaBus,
    s3_server: S3Server,
    bucket: str,
    state: SqliteState,
    stores: Stores,
) -> None:
    put_objects(s3_server, bucket, ["old.jpg"])
    configured = reconciling(settings, overlap_s=60, min_age_s=0)
    location = parse_location(f"s3://{bucket}")
    later = datetime.now(UTC) + timedelta(hours=2)
    first = await reconcile_once(
        configured,
        kafka_bus,
        stores,
        state,
        location,
        verdicts=Records(state),
        policy=configured.enforce.action_policy(),
        now=later,
    )
    assert first == 1  # no checkpoint yet: every object without a verdict
    assert await state.get_checkpoint(checkpoint_name(location)) == later.isoformat()
    # An hour on, old.jpg was modified well before the checkpoint minus the overlap.
    second = await reconcile_once(
        configured,
        kafka_bus,
        stores,
        state,
        location,
        verdicts=Records(state),
        policy=configured.enforce.action_policy(),
        now=later + timedelta(hours=1),
    )
    assert second == 0


async def test_young_objects_are_left_to_the_event_path(
    settings: Settings,
    kafka_bus: KafkaBus,
    s3_server: S3Server,
    bucket: str,
    state: SqliteState,
    stores: Stores,
) -> None:
    put_objects(s3_server, bucket, ["fresh.jpg"])
    configured = reconciling(settings, min_age_s=3600)
    location = parse_location(f"s3://{bucket}")
    assert (
        await reconcile_once(
            configured,
            kafka_bus,
            stores,
            state,
            location,
            verdicts=Records(state),
            policy=configured.enforce.action_policy(),
        )
        == 0
    )
    # ... and the checkpoint stays before them, so a later run picks them up.
    saved = await state.get_checkpoint(checkpoint_name(location))
    assert saved is not None and datetime.fromisoformat(saved) < datetime.now(UTC)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert (
        await reconcile_once(
            configured,
            kafka_bus,
            stores,
            state,
            location,
            verdicts=Records(state),
            policy=configured.enforce.action_policy(),
            now=later,
        )
        == 1
    )


async def test_distributed_mode_reads_the_ledger_enforce_keeps_on_kafka(
    settings: Settings,
    kafka_bus: KafkaBus,
    s3_server: S3Server,
    bucket: str,
    state: SqliteState,
    stores: Stores,
) -> None:
    """Enforce writes each verdict it records to the compacted object-verdicts topic; a
    fresh process (another ingest replica, a cron reconcile) loads it from there."""
    st = put_objects(s3_server, bucket, ["seen.jpg", "unseen.jpg"])
    await create_topics(settings.kafka, [settings.topic(OBJECT_VERDICTS)])
    await LedgerWriter(kafka_bus, settings.topic(OBJECT_VERDICTS)).write(
        verdict(bucket, st["seen.jpg"], Decision.ALLOW)
    )
    replica = TopicTable(kafka_bus, settings.topic(OBJECT_VERDICTS))
    await replica.start()
    try:
        n = await reconcile_once(
            reconciling(settings),
            kafka_bus,
            stores,
            state,
            f"s3://{bucket}",
            policy=settings.enforce.action_policy(),
            verdicts=TopicLedger(replica),
        )
    finally:
        await replica.stop()
    assert n == 1
    [request] = await scan_requests(kafka_bus, settings, at_least=1)
    assert request.object is not None and request.object.key == "unseen.jpg"


async def test_local_folder(
    settings: Settings, kafka_bus: KafkaBus, state: SqliteState, stores: Stores, tmp_path: Path
) -> None:
    root = tmp_path / "media"
    (root / "cache" / "x").mkdir(parents=True)
    (root / "cache" / "x" / "a.jpg").write_bytes(b"a")
    (root / "backups").mkdir()
    (root / "backups" / "dump.tar.gz").write_bytes(b"b")
    configured = reconciling(settings)
    ingest = configured.ingest.model_copy(update={"preset": "mastodon"})
    configured = configured.model_copy(update={"ingest": ingest})
    assert (
        await reconcile_once(
            configured,
            kafka_bus,
            stores,
            state,
            str(root),
            verdicts=Records(state),
            policy=configured.enforce.action_policy(),
        )
        == 1
    )
    [request] = await scan_requests(kafka_bus, settings, at_least=1)
    assert request.object is not None and request.object.key == "cache/x/a.jpg"
