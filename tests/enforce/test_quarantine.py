"""Quarantine and restore across buckets and folders on the moto server: keys unique per
source, never overwritten, never into a location the public can read."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from enforce.admin import EnforceAdmin, EnforceContext, NotFound
from enforce.quarantine import QuarantineError, QuarantineExposed, QuarantineSpec
from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import ActionOutcome, ActionType, Decision, StoreKind, Verdict, encode
from pipeline.state.sqlite import SqliteState
from pipeline.topics import VERDICTS
from tests.enforce.helpers import exists, verdict_for
from tests.enforce.receivers import http_receiver
from tests.exposure import make_public
from tests.media import photo_jpeg, webp_image


def new_bucket(s3: Any, **kwargs: Any) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    return name


async def quarantine(stage: EnforceStage, settings: Any, verdict: Verdict) -> None:
    await stage.handle([Message(settings.topic(VERDICTS), encode(verdict), verdict.key.encode())])


def test_quarantine_setting_forms(tmp_path: Path) -> None:
    default = QuarantineSpec.parse(None, tmp_path / "state")
    assert (default.kind, default.root, default.default) == (
        StoreKind.FILE,
        str((tmp_path / "state" / "quarantine").resolve()),
        True,
    )
    assert "private folder under storage.state_dir" in default.describe()
    s3 = QuarantineSpec.parse("s3://quarantine-bucket/held")
    assert (s3.kind, s3.root, s3.prefix) == (StoreKind.S3, "quarantine-bucket", "held/")
    bare = QuarantineSpec.parse("quarantine")
    assert (bare.kind, bare.prefix) == (None, "quarantine/")
    folder = QuarantineSpec.parse("./q")
    assert folder.kind is StoreKind.FILE and folder.root == str(Path("q").resolve())
    with pytest.raises(QuarantineError, match="s3://bucket/prefix/"):
        QuarantineSpec.parse("gs://elsewhere/x")


async def test_restore_is_byte_identical_across_two_buckets(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    data = os.urandom(50_000)
    put(bucket, "00/11/22/abc.webp", data, ContentType="image/webp", Metadata={"uploader": "alice"})
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/quarantine/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    verdict = verdict_for(bucket, "00/11/22/abc.webp", data=data)
    await quarantine(stage, settings, verdict)
    await stage.stop()
    [moved] = await tap.take()
    assert moved.outcome is ActionOutcome.DONE
    assert not exists(s3, bucket, "00/11/22/abc.webp")

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        result = await admin.restore(verdict.verdict_id, reason="false positive")
        again = admin.restore(verdict.verdict_id)
        with pytest.raises(NotFound, match="nothing in quarantine"):
            await again
    [restored] = result.actions
    assert (restored.action, restored.outcome) == (ActionType.RESTORE, ActionOutcome.DONE)
    assert restored.verdict_id == verdict.verdict_id
    back = s3.get_object(Bucket=bucket, Key="00/11/22/abc.webp")
    assert hashlib.sha256(back["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert back["ContentType"] == "image/webp"
    assert back["Metadata"] == {"uploader": "alice"}
    assert not exists(s3, qbucket, f"quarantine/s3/{bucket}/00/11/22/abc.webp")
    assert [a.action for a in await tap.take()] == [ActionType.RESTORE]


async def test_object_lock_retention_on_the_quarantined_copy(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    qbucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    put(bucket, "locked.jpg")
    settings, bus, stores, tap = await env(
        quarantine=f"s3://{qbucket}/", quarantine_retention_days=30
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    assert stage.enforcer.quarantine_warnings == []
    await quarantine(stage, settings, verdict_for(bucket, "locked.jpg"))
    await stage.stop()
    [action] = await tap.take()
    assert action.outcome is ActionOutcome.DONE
    head = s3.head_object(Bucket=qbucket, Key=f"s3/{bucket}/locked.jpg")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=29)


async def test_retention_without_object_lock_quarantines_unlocked_and_says_so(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any, caplog: Any
) -> None:
    """The retention is on by default (a year): a bucket without object lock still gets
    its quarantine, unlocked, with a warning in the log, not an exposure alert."""
    qbucket = new_bucket(s3)
    put(bucket, "keep.jpg")
    settings, bus, stores, tap = await env(
        quarantine=f"s3://{qbucket}/", quarantine_retention_days=7
    )
    stage = EnforceStage(bus, settings, stores, state)
    with caplog.at_level(logging.WARNING, logger="enforce.quarantine"):
        await stage.start()
    assert stage.enforcer.quarantine_warnings == []
    assert "cannot lock copies (no object lock on the bucket)" in caplog.text
    await quarantine(stage, settings, verdict_for(bucket, "keep.jpg"))
    await stage.stop()
    [action] = await tap.take()
    assert action.outcome is ActionOutcome.DONE
    assert not exists(s3, bucket, "keep.jpg")
    copy = f"s3/{bucket}/keep.jpg"
    assert "ObjectLockMode" not in s3.head_object(Bucket=qbucket, Key=copy)


@pytest.mark.parametrize(
    "exposure", ["acl", "policy", "get-star", "getobject-star", "upper", "star", "aws-list"]
)
async def test_public_quarantine_bucket_refuses_to_start(
    env: Any, state: SqliteState, s3: Any, exposure: str, caplog: Any
) -> None:
    """A live run that quarantines does not start into a public bucket (before: a warning,
    and ``s3:Get*``-style policies were not even recognised as public)."""
    qbucket = new_bucket(s3)
    make_public(s3, qbucket, exposure)
    with http_receiver() as hook:
        channel = {"type": "webhook", "url": hook.url, "min_severity": "critical"}
        settings, bus, stores, _ = await env(
            quarantine=f"s3://{qbucket}/q/", notify={"channels": [channel]}
        )
        stage = EnforceStage(bus, settings, stores, state)
        with pytest.raises(QuarantineExposed) as refused:
            await stage.start()
    text = str(refused.value)
    assert f"s3://{qbucket}/q/ is publicly readable" in text
    assert "make bucket" in text and "private" in text  # what to fix
    assert any("QUARANTINE LOCATION CHECK" in r.getMessage() for r in caplog.records)
    [alert] = [r.json() for r in hook.delivered()]
    assert alert["event"] == "quarantine_exposed" and alert["severity"] == "critical"


async def test_public_quarantine_is_only_a_warning_for_admin_commands_and_dry_runs(
    env: Any, state: SqliteState, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    make_public(s3, qbucket, "policy")
    settings, bus, stores, _ = await env(quarantine=f"s3://{qbucket}/q/", dry_run=True)
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()  # a dry run moves nothing
    await stage.stop()
    [warning] = stage.enforcer.quarantine_warnings
    assert "publicly readable" in warning and qbucket in warning
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        status = await admin.status()  # the admin must be able to see what is wrong
    assert any("publicly readable" in w for w in status["quarantine_warnings"])


async def test_missing_quarantine_bucket_refuses_to_start(
    env: Any, state: SqliteState, bucket: str
) -> None:
    settings, bus, stores, _ = await env(quarantine="s3://no-such-quarantine-bucket/q/")
    with pytest.raises(QuarantineExposed, match=r"no-such-quarantine-bucket.*not found"):
        await EnforceStage(bus, settings, stores, state).start()


async def test_private_quarantine_bucket_gives_no_warning(
    env: Any, state: SqliteState, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    settings, bus, stores, _ = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await stage.stop()
    assert stage.enforcer.quarantine_warnings == []


async def test_world_readable_quarantine_folder_refuses_to_start(
    env: Any, state: SqliteState, tmp_path: Path
) -> None:
    folder = tmp_path / "quarantine"
    folder.mkdir(mode=0o755)
    folder.chmod(0o711)  # not listable, but anyone may open a file whose name they know
    settings, bus, stores, _ = await env(quarantine=str(folder))
    with pytest.raises(QuarantineExposed, match=f"chmod o-rwx {folder}"):
        await EnforceStage(bus, settings, stores, state).start()


async def test_quarantine_to_a_folder_and_back(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "private-quarantine"
    data = put(bucket, "pics/one.png", os.urandom(4096), ContentType="image/png")
    settings, bus, stores, tap = await env(quarantine=str(folder))
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    assert stage.enforcer.quarantine_warnings == []
    assert folder.stat().st_mode & 0o077 == 0  # created private
    verdict = verdict_for(bucket, "pics/one.png", data=data)
    await quarantine(stage, settings, verdict)
    await stage.stop()
    [moved] = await tap.take()
    copy = folder / "s3" / bucket / "pics" / "one.png"
    assert copy.read_bytes() == data
    assert moved.quarantine is not None and moved.quarantine.store is StoreKind.FILE

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.restore(f"s3://{bucket}/pics/one.png")
    back = s3.get_object(Bucket=bucket, Key="pics/one.png")
    assert back["Body"].read() == data
    assert back["ContentType"] == "image/png"
    assert not copy.exists()


async def test_restore_from_metadata_when_the_state_is_lost(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any, tmp_path: Path
) -> None:
    qbucket = new_bucket(s3)
    data = put(bucket, "lost/state.jpg")
    settings, bus, stores, _ = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await quarantine(stage, settings, verdict_for(bucket, "lost/state.jpg", data=data))
    await stage.stop()

    fresh = SqliteState(tmp_path / "other" / "fresh.sqlite3")
    await fresh.start()
    try:
        async with EnforceAdmin(EnforceContext(settings, stores, fresh, bus)) as admin:
            # Named by the quarantined copy: its metadata says where it came from.
            result = await admin.restore(f"s3://{qbucket}/q/s3/{bucket}/lost/state.jpg")
    finally:
        await fresh.stop()
    assert result.actions[0].outcome is ActionOutcome.DONE
    assert s3.get_object(Bucket=bucket, Key="lost/state.jpg")["Body"].read() == data


async def test_local_media_folder_with_bare_prefix(
    env: Any, state: SqliteState, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    (media / "2024").mkdir(parents=True)
    (media / "2024" / "pic.jpg").write_bytes(b"local image bytes")
    settings, bus, stores, tap = await env(quarantine="quarantine/")
    store = stores.open(StoreKind.FILE, str(media))
    verdict = Verdict(
        request_id="r1",
        object=store.ref("2024/pic.jpg"),
        decision=Decision.FLAG_CSAM,
        sha256=hashlib.sha256(b"local image bytes").hexdigest(),
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await quarantine(stage, settings, verdict)
    await stage.stop()
    [moved] = await tap.take()
    assert moved.outcome is ActionOutcome.DONE
    assert not (media / "2024" / "pic.jpg").exists()
    copy = media / "quarantine" / "file" / str(media).lstrip("/") / "2024" / "pic.jpg"
    assert copy.read_bytes() == b"local image bytes"
    assert (media / "quarantine").stat().st_mode & 0o077 == 0

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.restore(str(media / "2024" / "pic.jpg"))
    assert (media / "2024" / "pic.jpg").read_bytes() == b"local image bytes"
    assert not copy.exists()


async def test_same_key_from_two_buckets_and_a_folder_keeps_every_copy(
    env: Any, state: SqliteState, s3: Any, tmp_path: Path
) -> None:
    """Before, the copy's key left out its source: the second bucket's copy overwrote the
    first one in quarantine, and a restore brought back the wrong image."""
    qbucket, first, second = new_bucket(s3), new_bucket(s3), new_bucket(s3)
    key = "2024/05/avatar.jpg"
    images = {first: photo_jpeg(1, 800, 600), second: photo_jpeg(2, 640, 480)}
    for name, data in images.items():
        s3.put_object(Bucket=name, Key=key, Body=data, ContentType="image/jpeg")
    media = tmp_path / "media"
    (media / "2024" / "05").mkdir(parents=True)
    local = webp_image(3, 800, 600)
    (media / key).write_bytes(local)
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/held/")
    verdicts = [verdict_for(name, key, data=data) for name, data in images.items()]
    verdicts.append(
        Verdict(
            request_id=uuid.uuid4().hex,
            object=stores.open(StoreKind.FILE, str(media)).ref(key),
            decision=Decision.FLAG_CSAM,
            sha256=hashlib.sha256(local).hexdigest(),
        )
    )
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    for verdict in verdicts:
        await quarantine(stage, settings, verdict)
    await stage.stop()
    moved = await tap.take()
    assert [a.outcome for a in moved] == [ActionOutcome.DONE] * 3
    assert len({a.quarantine.id for a in moved if a.quarantine}) == 3  # three copies
    assert not exists(s3, first, key) and not exists(s3, second, key)
    assert not (media / key).exists()

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        for verdict in verdicts:
            [restored] = (await admin.restore(verdict.verdict_id)).actions
            assert restored.outcome is ActionOutcome.DONE
    for name, data in images.items():
        back = s3.get_object(Bucket=name, Key=key)
        assert back["Body"].read() == data and back["ContentType"] == "image/jpeg"
    assert (media / key).read_bytes() == local


async def test_a_second_incident_of_one_key_never_overwrites_the_first_copy(
    env: Any, state: SqliteState, bucket: str, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    key = "uploads/same-name.jpg"
    settings, bus, stores, tap = await env(quarantine=f"s3://{qbucket}/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    copies = {}
    for seed in (11, 12):  # the same name uploaded again after the first was quarantined
        data = photo_jpeg(seed, 640, 480)
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        await quarantine(stage, settings, verdict_for(bucket, key, data=data))
        [action] = await tap.take()
        assert action.outcome is ActionOutcome.DONE and action.quarantine is not None
        copies[action.quarantine.key] = data
    await stage.stop()
    assert len(copies) == 2
    for copy_key, data in copies.items():
        assert s3.get_object(Bucket=qbucket, Key=copy_key)["Body"].read() == data


async def test_quarantine_location_made_public_later_holds_the_action(
    env: Any, state: SqliteState, bucket: str, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    first, second = photo_jpeg(21, 800, 600), photo_jpeg(22, 800, 600)
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=first)
    s3.put_object(Bucket=bucket, Key="b.jpg", Body=second)
    with http_receiver() as hook, http_receiver() as slack:
        channels = [
            {"type": "webhook", "url": hook.url, "min_severity": "critical"},
            {"type": "slack", "url": f"{slack.url}/services/T/B/x", "min_severity": "critical"},
        ]
        settings, bus, stores, tap = await env(
            quarantine=f"s3://{qbucket}/q/",
            quarantine_recheck_s=0,
            notify={"channels": channels},
        )
        stage = EnforceStage(bus, settings, stores, state)
        await stage.start()
        await quarantine(stage, settings, verdict_for(bucket, "a.jpg", data=first))
        make_public(s3, qbucket, "get-star")  # someone opens the bucket meanwhile
        await quarantine(stage, settings, verdict_for(bucket, "b.jpg", data=second))
        await stage.stop()
        alerts = [r.json() for r in hook.delivered()]
        texts = [r.json()["text"] for r in slack.delivered()]
    done, held = await tap.take()
    assert done.outcome is ActionOutcome.DONE
    assert (held.action, held.outcome) == (ActionType.QUARANTINE, ActionOutcome.HELD)
    assert f"s3://{qbucket}/q/ is publicly readable" in (held.detail or "")
    assert "pictguard enforce resume" in (held.detail or "")
    assert exists(s3, bucket, "b.jpg")  # nothing moved into the public bucket
    assert not any(
        k["Key"].endswith("b.jpg") for k in s3.list_objects_v2(Bucket=qbucket)["Contents"]
    )
    exposed = [a for a in alerts if a["event"] == "quarantine_exposed"]
    assert (
        exposed and exposed[0]["severity"] == "critical" and "make bucket" in exposed[0]["summary"]
    )
    assert any("publicly readable" in t for t in texts)  # every channel heard it

    s3.delete_bucket_policy(Bucket=qbucket)  # fixed: release what was held
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        resumed = await admin.resume(reason="bucket private again")
    assert [a.outcome for a in resumed.actions] == [ActionOutcome.DONE]
    assert not exists(s3, bucket, "b.jpg")
