"""Quarantine and restore across buckets and folders on the moto server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from enforce.admin import EnforceAdmin, EnforceContext, NotFound
from enforce.quarantine import QuarantineError, QuarantineSpec
from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import ActionOutcome, ActionType, Decision, StoreKind, Verdict, encode
from pipeline.state.sqlite import SqliteState
from pipeline.topics import VERDICTS
from tests.enforce.conftest import exists, verdict_for


def new_bucket(s3: Any, **kwargs: Any) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    return name


async def quarantine(stage: EnforceStage, settings: Any, verdict: Verdict) -> None:
    await stage.handle([Message(settings.topic(VERDICTS), encode(verdict), verdict.key.encode())])


def test_quarantine_setting_forms() -> None:
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
    assert not exists(s3, qbucket, "quarantine/00/11/22/abc.webp")
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
    head = s3.head_object(Bucket=qbucket, Key="locked.jpg")
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
    assert "ObjectLockMode" not in s3.head_object(Bucket=qbucket, Key="keep.jpg")


@pytest.mark.parametrize("exposure", ["acl", "policy"])
async def test_public_quarantine_bucket_is_reported_loudly(
    env: Any, state: SqliteState, s3: Any, exposure: str, caplog: Any
) -> None:
    qbucket = new_bucket(s3)
    if exposure == "acl":
        s3.put_bucket_acl(Bucket=qbucket, ACL="public-read")
    else:
        s3.put_bucket_policy(
            Bucket=qbucket,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{qbucket}/*",
                        }
                    ],
                }
            ),
        )
    settings, bus, stores, _ = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await stage.stop()
    [warning] = stage.enforcer.quarantine_warnings
    assert "publicly readable" in warning and qbucket in warning
    assert any("QUARANTINE LOCATION CHECK" in r.getMessage() for r in caplog.records)


async def test_private_quarantine_bucket_gives_no_warning(
    env: Any, state: SqliteState, s3: Any
) -> None:
    qbucket = new_bucket(s3)
    settings, bus, stores, _ = await env(quarantine=f"s3://{qbucket}/q/")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await stage.stop()
    assert stage.enforcer.quarantine_warnings == []


async def test_world_readable_quarantine_folder_warns(
    env: Any, state: SqliteState, tmp_path: Path
) -> None:
    folder = tmp_path / "quarantine"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    settings, bus, stores, _ = await env(quarantine=str(folder))
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    await stage.stop()
    [warning] = stage.enforcer.quarantine_warnings
    assert "world-readable" in warning and "chmod o-rwx" in warning


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
    assert (folder / "pics" / "one.png").read_bytes() == data
    assert moved.quarantine is not None and moved.quarantine.store is StoreKind.FILE

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.restore(f"s3://{bucket}/pics/one.png")
    back = s3.get_object(Bucket=bucket, Key="pics/one.png")
    assert back["Body"].read() == data
    assert back["ContentType"] == "image/png"
    assert not (folder / "pics" / "one.png").exists()


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
            result = await admin.restore(f"s3://{qbucket}/q/lost/state.jpg")
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
    assert (media / "quarantine" / "2024" / "pic.jpg").read_bytes() == b"local image bytes"
    assert (media / "quarantine").stat().st_mode & 0o077 == 0

    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.restore(str(media / "2024" / "pic.jpg"))
    assert (media / "2024" / "pic.jpg").read_bytes() == b"local image bytes"
    assert not (media / "quarantine" / "2024" / "pic.jpg").exists()
