"""Admin flows: allow, block, restore by many names, audit filters, bad input."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from classify.hashlists import HashLists
from enforce.admin import AdminError, EnforceAdmin, EnforceContext, NotFound
from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import ActionOutcome, ActionType, Decision, Verdict, encode
from pipeline.state.sqlite import SqliteState
from pipeline.topics import VERDICTS
from tests.enforce.helpers import exists, verdict_for


async def handle(stage: EnforceStage, settings: Any, *verdicts: Verdict) -> None:
    await stage.handle(
        [Message(settings.topic(VERDICTS), encode(v), v.key.encode()) for v in verdicts]
    )


@pytest.fixture
async def quarantined(env: Any, state: SqliteState, bucket: str, put: Any, s3: Any) -> Any:
    """Two objects with the same bytes and one other, all quarantined in another bucket."""
    qbucket = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=qbucket)
    same = put(bucket, "a/1.jpg", b"same image bytes")
    put(bucket, "b/2.jpg", same)
    other = put(bucket, "c/3.jpg", b"another image")
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    verdicts = [
        verdict_for(bucket, "a/1.jpg", data=same, pdq="0f" * 32, pdq_quality=90),
        verdict_for(bucket, "b/2.jpg", data=same),
        verdict_for(bucket, "c/3.jpg", data=other),
    ]
    await handle(stage, settings, *verdicts)
    await stage.stop()
    assert [a.outcome for a in await tap.take()] == [ActionOutcome.DONE] * 3
    return settings, bus, stores, tap, verdicts, EnforceContext(settings, stores, state, bus)


async def test_allow_by_object_writes_the_allowlist_and_restores_every_copy(
    quarantined: Any, state: SqliteState, bucket: str, s3: Any
) -> None:
    _settings, _bus, _stores, tap, _verdicts, ctx = quarantined
    async with EnforceAdmin(ctx) as admin:
        result = await admin.allow(f"s3://{bucket}/a/1.jpg", reason="beach photo", author="ana")
    sha = hashlib.sha256(b"same image bytes").hexdigest()
    entry = await HashLists(state.table("hashlists")).get(sha)
    assert entry is not None
    assert (entry.list, entry.reason, entry.author) == ("allow", "beach photo", "ana")
    assert entry.pdq == "0f" * 32 and entry.pdq_quality == 90
    assert result.entry is not None and result.entry["sha256"] == sha
    # Both objects with these bytes come back; the other stays in quarantine.
    assert sorted(a.object.key for a in result.actions if a.object) == ["a/1.jpg", "b/2.jpg"]
    assert {(a.action, a.outcome) for a in result.actions} == {
        (ActionType.RESTORE, ActionOutcome.DONE)
    }
    assert s3.get_object(Bucket=bucket, Key="a/1.jpg")["Body"].read() == b"same image bytes"
    assert exists(s3, bucket, "b/2.jpg")
    assert not exists(s3, bucket, "c/3.jpg")
    assert len(await tap.take()) == 2


async def test_allow_by_sha256_and_dry_run(
    quarantined: Any, state: SqliteState, bucket: str, s3: Any
) -> None:
    *_, ctx = quarantined
    sha = hashlib.sha256(b"another image").hexdigest()
    async with EnforceAdmin(ctx, dry_run=True) as admin:
        preview = await admin.allow(sha, reason="ok", author="ana")
    assert preview.summary.startswith("dry run: would allowlist")
    assert await HashLists(state.table("hashlists")).get(sha) is None
    assert not exists(s3, bucket, "c/3.jpg")
    async with EnforceAdmin(ctx) as admin:
        await admin.allow(sha.upper(), reason="ok", author="ana")
    assert exists(s3, bucket, "c/3.jpg")


async def test_allow_discards_held_actions_for_that_image(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    settings, bus, stores, tap = await env(
        on_flag_csam="delete", guard={"max_destructive_per_minute": 1}
    )
    first = put(bucket, "1.jpg", b"one")
    held_bytes = put(bucket, "2.jpg", b"two")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await handle(
        stage,
        settings,
        verdict_for(bucket, "1.jpg", data=first),
        verdict_for(bucket, "2.jpg", data=held_bytes),
    )
    await stage.stop()
    assert sorted(a.outcome for a in await tap.take()) == [ActionOutcome.DONE, ActionOutcome.HELD]
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        result = await admin.allow(f"s3://{bucket}/2.jpg", reason="fine", author="ana")
        status = await admin.status()
    assert [(a.action, a.outcome) for a in result.actions] == [
        (ActionType.REPORT, ActionOutcome.DONE)
    ]
    assert status["held"] == 0
    assert exists(s3, bucket, "2.jpg")


async def test_block_lists_the_image_and_acts_on_its_copies(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    settings, bus, stores, _tap = await env(on_flag_csam="delete")
    data = put(bucket, "known/bad.jpg", b"known bad")
    put(bucket, "mirror/bad.jpg", data)
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    # Both copies were scanned and allowed earlier (the model missed it).
    await handle(
        stage,
        settings,
        verdict_for(bucket, "known/bad.jpg", Decision.ALLOW, data=data),
        verdict_for(bucket, "mirror/bad.jpg", Decision.ALLOW, data=data),
    )
    await stage.stop()
    ctx = EnforceContext(settings, stores, state, bus)
    async with EnforceAdmin(ctx, dry_run=True) as admin:
        preview = await admin.block(f"s3://{bucket}/known/bad.jpg", reason="reported", author="ana")
    assert {a.outcome for a in preview.actions} == {ActionOutcome.DRY_RUN}
    assert exists(s3, bucket, "known/bad.jpg")
    async with EnforceAdmin(ctx) as admin:
        result = await admin.block(f"s3://{bucket}/known/bad.jpg", reason="reported", author="ana")
    entry = await HashLists(state.table("hashlists")).get(hashlib.sha256(data).hexdigest())
    assert entry is not None and (entry.list, entry.category) == ("block", "csam")
    assert sorted(a.object.key for a in result.actions if a.object) == [
        "known/bad.jpg",
        "mirror/bad.jpg",
    ]
    assert {a.outcome for a in result.actions} == {ActionOutcome.DONE}
    assert not exists(s3, bucket, "known/bad.jpg") and not exists(s3, bucket, "mirror/bad.jpg")


async def test_restore_by_key_and_by_quarantined_id(quarantined: Any, bucket: str, s3: Any) -> None:
    settings, _bus, _stores, _tap, _verdicts, ctx = quarantined
    qbucket = settings.enforce.quarantine.split("/")[2]
    async with EnforceAdmin(ctx) as admin:
        by_key = await admin.restore("c/3.jpg")
        by_copy = await admin.restore(f"s3://{qbucket}/q/s3/{bucket}/a/1.jpg")
    assert [a.object.key for a in by_key.actions if a.object] == ["c/3.jpg"]
    assert [a.object.key for a in by_copy.actions if a.object] == ["a/1.jpg"]
    assert exists(s3, bucket, "c/3.jpg") and exists(s3, bucket, "a/1.jpg")
    assert not exists(s3, bucket, "b/2.jpg")


async def test_audit_filters(quarantined: Any) -> None:
    *_, verdicts, ctx = quarantined
    async with EnforceAdmin(ctx) as admin:
        await admin.restore(verdicts[2].verdict_id)
        everything = await admin.audit(since="1h")
        restores = await admin.audit(action="restore")
        csam = await admin.audit(decision="flag_csam", outcome="done", limit=2)
        future = await admin.audit(since="2999-01-01")
    assert len(everything) == 4
    assert [a.verdict_id for a in restores] == [verdicts[2].verdict_id]
    assert len(csam) == 2
    assert future == []


async def test_admin_errors_say_what_to_do(quarantined: Any) -> None:
    *_, ctx = quarantined
    async with EnforceAdmin(ctx) as admin:
        with pytest.raises(AdminError, match="give a reason"):
            await admin.allow("ab" * 32, reason=" ", author="x")
        with pytest.raises(AdminError, match="neither a sha256"):
            await admin.allow("not-a-hash", reason="r", author="x")
        with pytest.raises(NotFound, match="nothing in quarantine"):
            await admin.restore("0" * 32)
        with pytest.raises(AdminError, match="allowed values are"):
            await admin.audit(decision="maybe")
        with pytest.raises(AdminError, match="bucket 'no-such-bucket-x' not found"):
            await admin.allow("s3://no-such-bucket-x/k.jpg", reason="r", author="x")
        with pytest.raises(NotFound, match="does not exist"):
            await admin.allow(
                f"s3://{ctx.settings.enforce.quarantine.split('/')[2]}/nope.jpg",
                reason="r",
                author="x",
            )
        with pytest.raises(AdminError, match="30m, 2h, 7d"):
            await admin.audit(since="yesterday")
