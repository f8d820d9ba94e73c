"""The enforce stage against the real moto S3 server and the in-process bus."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import (
    ActionOutcome,
    ActionType,
    DeadLetter,
    Decision,
    EnforcementAction,
    Lane,
    ScanRequest,
    Verdict,
    decode,
    encode,
)
from pipeline.state.sqlite import SqliteState
from pipeline.topics import DEAD_LETTER, SCAN_BULK, VERDICTS
from tests.enforce.helpers import exists, verdict_for
from tests.media import photo_jpeg


def message(settings: Any, verdict: Verdict | bytes, offset: int = 0) -> Message:
    value = verdict if isinstance(verdict, bytes) else encode(verdict)
    key = None if isinstance(verdict, bytes) else verdict.key.encode()
    return Message(topic=settings.topic(VERDICTS), value=value, key=key, offset=offset)


async def run(stage: EnforceStage, settings: Any, *verdicts: Verdict | bytes) -> None:
    await stage.handle([message(settings, v, i) for i, v in enumerate(verdicts)])


async def test_quarantine_moves_object_to_other_bucket_with_metadata(
    env: Any, state: SqliteState, bucket: str, s3_server: Any, put: Any, s3: Any
) -> None:
    qbucket = f"q-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=qbucket)
    data = put(bucket, "aa/bb/img.jpg", ContentType="image/jpeg", Metadata={"owner": "u1"})
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/held/")
    seen: list[tuple[Verdict, EnforcementAction | None]] = []
    stage = EnforceStage(bus, settings, stores, state, on_outcome=lambda v, a: seen.append((v, a)))
    await stage.start()
    verdict = verdict_for(bucket, "aa/bb/img.jpg", data=data)
    await run(stage, settings, verdict)
    await stage.stop()

    [action] = await tap.take()
    assert action.action is ActionType.QUARANTINE
    assert action.outcome is ActionOutcome.DONE
    assert action.quarantine is not None
    # The copy's key names its source bucket: copies from two buckets never meet.
    assert action.quarantine.id == f"s3://{qbucket}/held/s3/{bucket}/aa/bb/img.jpg"
    assert not exists(s3, bucket, "aa/bb/img.jpg")
    copy = s3.get_object(Bucket=qbucket, Key=f"held/s3/{bucket}/aa/bb/img.jpg")
    assert copy["Body"].read() == data
    assert copy["ContentType"] == "image/jpeg"
    meta = copy["Metadata"]
    assert meta["pictguard-verdict-id"] == verdict.verdict_id
    assert meta["pictguard-decision"] == "flag_csam"
    assert meta["pictguard-original"] == f"s3://{bucket}/aa/bb/img.jpg"
    assert meta["pictguard-sha256"] == hashlib.sha256(data).hexdigest()
    assert '"csam":0.91' in meta["pictguard-scores"]
    assert "pictguard-quarantined-at" in meta
    assert seen == [(verdict, action)]
    rows = await state.fetchall(
        "SELECT outcome FROM actions WHERE verdict_id = ?", (verdict.verdict_id,)
    )
    assert rows == [("done",)]
    assert await state.fetchone(
        "SELECT decision FROM verdicts WHERE verdict_id = ?", (verdict.verdict_id,)
    ) == ("flag_csam",)


async def test_bare_prefix_quarantines_inside_the_same_bucket(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    data = put(bucket, "x/y.png")
    settings, bus, stores, tap = await env(quarantine="quarantine/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(stage, settings, verdict_for(bucket, "x/y.png", data=data))
    [action] = await tap.take()
    assert action.quarantine is not None
    copy_key = f"quarantine/s3/{bucket}/x/y.png"
    assert action.quarantine.id == f"s3://{bucket}/{copy_key}"
    assert s3.get_object(Bucket=bucket, Key=copy_key)["Body"].read() == data
    assert not exists(s3, bucket, "x/y.png")

    # A verdict about the quarantined copy itself (a rescan of the bucket) moves nothing.
    await run(stage, settings, verdict_for(bucket, copy_key, data=data))
    [again] = await tap.take()
    assert again.action is ActionType.REPORT
    assert "quarantine location" in (again.detail or "")
    assert exists(s3, bucket, copy_key)
    await stage.stop()


async def test_policy_per_decision(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    for key in ("csam.jpg", "nsfw.jpg", "err.jpg", "ok.jpg"):
        put(bucket, key)
    settings, bus, stores, tap = await env(
        on_flag_csam="delete", on_flag_nsfw="report", on_error="report"
    )
    seen: list[tuple[Verdict, EnforcementAction | None]] = []
    stage = EnforceStage(bus, settings, stores, state, on_outcome=lambda v, a: seen.append((v, a)))
    await stage.start()
    allow = verdict_for(bucket, "ok.jpg", Decision.ALLOW)
    await run(
        stage,
        settings,
        verdict_for(bucket, "csam.jpg", Decision.FLAG_CSAM),
        verdict_for(bucket, "nsfw.jpg", Decision.FLAG_NSFW),
        verdict_for(bucket, "err.jpg", Decision.ERROR),
        allow,
    )
    await stage.stop()
    by_key = {a.object.key: a for a in await tap.take() if a.object}
    assert set(by_key) == {"csam.jpg", "nsfw.jpg", "err.jpg"}
    assert (by_key["csam.jpg"].action, by_key["csam.jpg"].outcome) == (
        ActionType.DELETE,
        ActionOutcome.DONE,
    )
    assert (by_key["nsfw.jpg"].action, by_key["nsfw.jpg"].outcome) == (
        ActionType.REPORT,
        ActionOutcome.DONE,
    )
    assert by_key["err.jpg"].action is ActionType.REPORT
    assert not exists(s3, bucket, "csam.jpg")
    assert exists(s3, bucket, "nsfw.jpg") and exists(s3, bucket, "err.jpg")
    assert (allow, None) in seen


async def test_dry_run_changes_nothing(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    put(bucket, "a.jpg")
    put(bucket, "b.jpg")
    settings, bus, stores, tap = await env(dry_run=True, on_flag_nsfw="delete")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(
        stage,
        settings,
        verdict_for(bucket, "a.jpg", Decision.FLAG_CSAM),
        verdict_for(bucket, "b.jpg", Decision.FLAG_NSFW),
    )
    await stage.stop()
    actions = await tap.take()
    assert {a.outcome for a in actions} == {ActionOutcome.DRY_RUN}
    assert all(a.dry_run for a in actions)
    details = sorted(a.detail or "" for a in actions)
    assert details[0] == "dry run: would delete"
    # The default quarantine: the private folder under the state dir, keyed by source.
    quarantine = settings.storage.state_dir.resolve() / "quarantine"
    assert details[1] == f"dry run: would quarantine to file://{quarantine}/s3/{bucket}/a.jpg"
    assert exists(s3, bucket, "a.jpg") and exists(s3, bucket, "b.jpg")


async def test_duplicate_verdicts_give_one_action(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    data = put(bucket, "dup.jpg")
    settings, bus, stores, tap = await env()
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    first = verdict_for(bucket, "dup.jpg", data=data)
    # Redelivery of the same message, and classify rerunning the request after a crash
    # (a fresh verdict id for the same request and content).
    replayed = first.model_copy(update={"verdict_id": "f" * 32})
    await run(stage, settings, first, first, replayed)
    await stage.stop()
    actions = await tap.take()
    assert [a.outcome for a in actions] == [
        ActionOutcome.DONE,
        ActionOutcome.DUPLICATE,
        ActionOutcome.DUPLICATE,
    ]
    assert {a.action for a in actions} == {ActionType.QUARANTINE}
    assert actions[1].quarantine == actions[0].quarantine
    assert not exists(s3, bucket, "dup.jpg")


async def test_duplicates_survive_a_restart(
    env: Any, state: SqliteState, bucket: str, put: Any
) -> None:
    data = put(bucket, "r.jpg")
    settings, bus, stores, tap = await env(on_flag_csam="delete")
    verdict = verdict_for(bucket, "r.jpg", data=data)
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(stage, settings, verdict)
    await stage.stop()
    restarted = EnforceStage(bus, settings, stores, state)
    await restarted.start()
    await run(restarted, settings, verdict.model_copy(update={"verdict_id": "e" * 32}))
    await restarted.stop()
    assert [a.outcome for a in await tap.take()] == [ActionOutcome.DONE, ActionOutcome.DUPLICATE]


async def test_missing_object_is_already_absent(env: Any, state: SqliteState, bucket: str) -> None:
    settings, bus, stores, tap = await env(on_flag_nsfw="delete")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(
        stage,
        settings,
        verdict_for(bucket, "gone.jpg", Decision.FLAG_CSAM),
        verdict_for(bucket, "gone2.jpg", Decision.FLAG_NSFW),
    )
    await stage.stop()
    actions = await tap.take()
    assert [a.outcome for a in actions] == [ActionOutcome.ALREADY_ABSENT] * 2
    assert {a.action for a in actions} == {ActionType.QUARANTINE, ActionType.DELETE}


async def test_storage_failure_is_a_failed_action_not_a_crash(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    put(bucket, "ok.jpg")
    put(bucket, "stuck.jpg")
    qbucket = f"gone-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=qbucket)
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    # The quarantine bucket disappears after start-up: the copy fails, the original stays.
    s3.delete_bucket(Bucket=qbucket)
    await run(stage, settings, verdict_for(bucket, "stuck.jpg"))
    await stage.stop()
    [action] = await tap.take()
    assert action.outcome is ActionOutcome.FAILED
    assert qbucket in (action.detail or "")
    assert "not found" in (action.detail or "")
    assert exists(s3, bucket, "stuck.jpg")

    # A failed action is not final: once the location works, the next verdict acts.
    s3.create_bucket(Bucket=qbucket)
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(stage, settings, verdict_for(bucket, "stuck.jpg"))
    await stage.stop()
    [retry] = await tap.take()
    assert retry.outcome is ActionOutcome.DONE
    assert not exists(s3, bucket, "stuck.jpg")


async def test_malformed_verdict_is_dead_lettered(
    env: Any, state: SqliteState, bucket: str, put: Any
) -> None:
    put(bucket, "fine.jpg")
    settings, bus, stores, tap = await env()
    dlq = bus.consumer([settings.topic(DEAD_LETTER)], "dlq")
    await dlq.start()
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(stage, settings, b"{not json", verdict_for(bucket, "fine.jpg"))
    await stage.stop()
    [dead] = [decode(m.value, DeadLetter) for m in await dlq.getmany(0, 10)]
    assert dead.reason == "malformed_event"
    assert [a.outcome for a in await tap.take()] == [ActionOutcome.DONE]


async def test_inline_upload_verdict_is_reported_without_storage(
    env: Any, state: SqliteState
) -> None:
    settings, bus, stores, tap = await env(on_flag_csam="delete")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    inline = Verdict(request_id="req-1", lane=Lane.SYNC, decision=Decision.FLAG_CSAM)
    replayed = inline.model_copy(update={"verdict_id": "d" * 32})
    await run(stage, settings, inline, inline, replayed)
    await stage.stop()
    actions = await tap.take()
    assert [(a.action, a.outcome) for a in actions] == [
        (ActionType.REPORT, ActionOutcome.DONE),
        (ActionType.REPORT, ActionOutcome.DUPLICATE),
        (ActionType.REPORT, ActionOutcome.DUPLICATE),
    ]
    assert actions[0].object is None


async def test_batch_keeps_per_object_order(
    env: Any, state: SqliteState, bucket: str, put: Any
) -> None:
    keys = [f"k{i}.jpg" for i in range(12)]
    for key in keys:
        put(bucket, key)
    settings, bus, stores, tap = await env(
        concurrency=4, on_flag_nsfw="delete", guard={"enabled": False}
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    # Per object: nsfw (delete) first, then a csam verdict that finds it gone.
    verdicts = [verdict_for(bucket, k, Decision.FLAG_NSFW) for k in keys]
    verdicts += [verdict_for(bucket, k, Decision.FLAG_CSAM) for k in keys]
    await run(stage, settings, *verdicts)
    await stage.stop()
    actions = await tap.take()
    assert len(actions) == 24
    for key in keys:
        mine = [a for a in actions if a.object and a.object.key == key]
        assert [(a.action, a.outcome) for a in mine] == [
            (ActionType.DELETE, ActionOutcome.DONE),
            (ActionType.QUARANTINE, ActionOutcome.ALREADY_ABSENT),
        ]


async def test_a_verdict_outside_the_allowed_locations_is_refused(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    """Before, enforce deleted whatever a verdict named, in any bucket its keys reach."""
    other = f"other-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    data = put(other, "not-ours.jpg", photo_jpeg(31, 640, 480))
    put(bucket, "ours.jpg", data)
    settings, bus, stores, tap = await env(
        storage={"allowed_locations": [f"s3://{bucket}"]}, on_flag_csam="delete"
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(
        stage,
        settings,
        verdict_for(other, "not-ours.jpg", data=data),
        verdict_for(bucket, "ours.jpg", data=data),
    )
    await stage.stop()
    by_bucket = {a.object.bucket: a for a in await tap.take() if a.object}
    refused = by_bucket[other]
    assert (refused.action, refused.outcome) == (ActionType.DELETE, ActionOutcome.FAILED)
    assert "outside the locations pictguard may act on" in (refused.detail or "")
    assert "storage.allowed_locations" in (refused.detail or "")
    assert exists(s3, other, "not-ours.jpg")
    assert by_bucket[bucket].outcome is ActionOutcome.DONE
    assert not exists(s3, bucket, "ours.jpg")


async def test_an_object_changed_since_its_verdict_is_rescanned_not_removed(
    env: Any, state: SqliteState, bucket: str, s3: Any
) -> None:
    """Enforce acts only on the version classified: new bytes under the key get a scan."""
    flagged = photo_jpeg(41, 800, 600)
    s3.put_object(Bucket=bucket, Key="avatar.jpg", Body=flagged)
    classified = s3.head_object(Bucket=bucket, Key="avatar.jpg")["ETag"].strip('"')
    replaced = photo_jpeg(42, 800, 600)  # the user replaced the image before enforce ran
    s3.put_object(Bucket=bucket, Key="avatar.jpg", Body=replaced)
    current = s3.head_object(Bucket=bucket, Key="avatar.jpg")["ETag"].strip('"')
    settings, bus, stores, tap = await env(on_flag_csam="delete")
    rescans = bus.consumer([settings.topic(SCAN_BULK)], "rescans")
    await rescans.start()
    verdict = verdict_for(bucket, "avatar.jpg", data=flagged)
    verdict = verdict.model_copy(
        update={"object": verdict.object.model_copy(update={"etag": classified})}  # type: ignore[union-attr]
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await run(stage, settings, verdict)
    await stage.stop()
    [action] = await tap.take()
    assert (action.action, action.outcome) == (ActionType.REPORT, ActionOutcome.DONE)
    assert "changed since it was classified" in (action.detail or "")
    assert s3.get_object(Bucket=bucket, Key="avatar.jpg")["Body"].read() == replaced
    [request] = [decode(m.value, ScanRequest) for m in await rescans.getmany(0, 10)]
    assert request.object is not None
    assert (request.object.id, request.object.etag) == (f"s3://{bucket}/avatar.jpg", current)
