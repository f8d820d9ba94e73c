"""Keeping rejected uploads: where they go, locks, replays, failures, retention warnings."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from enforce.enforcer import Enforcer
from enforce.preserve import UploadKeeper, evidence_spec, retention_warnings
from enforce.quarantine import QuarantineError
from pictguard.settings import load_settings
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    Lane,
    Source,
    StoreKind,
    UploadEvidence,
    Verdict,
)
from pipeline.state.sqlite import SqliteState
from tests.media import photo_jpeg
from validate_api.evidence import EvidenceSender, verdict_of
from validate_api.service import Outcome


def evidence(data: bytes, **verdict: Any) -> UploadEvidence:
    return UploadEvidence(
        verdict=Verdict(
            request_id=uuid.uuid4().hex,
            lane=Lane.SYNC,
            source=Source.API,
            decision=Decision.FLAG_CSAM,
            sha256=hashlib.sha256(data).hexdigest(),
            matched="blocklist:sha256",
            **verdict,
        ),
        content=data,
        content_type="image/jpeg",
        client_id="pictrs-main",
        context={"uploader": "@someone@lemmy.example"},
    )


def test_retention_defaults_to_a_year_and_warns_below_ninety_days(tmp_path: Path) -> None:
    settings = load_settings(storage={"state_dir": str(tmp_path)})
    assert settings.enforce.quarantine_retention_days == 365
    assert retention_warnings(settings) == []
    short = load_settings(enforce={"quarantine_retention_days": 30})
    [warning] = retention_warnings(short)
    assert "2258A(h)" in warning and "1 year" in warning and "jurisdiction" in warning


def test_where_uploads_go(tmp_path: Path) -> None:
    folder = load_settings(enforce={"quarantine": str(tmp_path / "q")})
    spec = evidence_spec(folder)
    assert (spec.kind, spec.root) == (StoreKind.FILE, str(tmp_path / "q"))
    bucket = load_settings(enforce={"quarantine": "s3://held/quarantine/"})
    spec = evidence_spec(bucket)
    assert (spec.kind, spec.root, spec.prefix) == (StoreKind.S3, "held", "quarantine/")
    # A bare prefix lives in scanned buckets; an upload has none: beside the state file.
    bare = load_settings(storage={"state_dir": str(tmp_path / "st")})
    spec = evidence_spec(bare)
    assert spec.root == str((tmp_path / "st" / "evidence").resolve())
    explicit = load_settings(enforce={"upload_evidence": "s3://evidence-bucket/uploads/"})
    assert evidence_spec(explicit).root == "evidence-bucket"
    with pytest.raises(QuarantineError, match="name a bucket"):
        evidence_spec(load_settings(enforce={"upload_evidence": "kept/"}))


async def test_an_upload_is_kept_once_locked_where_the_bucket_can_lock(
    env: Any, state: SqliteState, s3: Any
) -> None:
    locked = f"ev-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    settings, bus, stores, tap = await env(upload_evidence=f"s3://{locked}/kept/")
    enforcer = Enforcer(bus, settings, stores, state)
    await enforcer.start()
    keeper = UploadKeeper(enforcer, settings, stores)
    assert await keeper.start() == []
    data = photo_jpeg(77, 640, 480)
    event = evidence(data)
    action = await keeper.keep(event)
    assert action is not None and action.outcome is ActionOutcome.DONE
    assert action.action is ActionType.QUARANTINE and action.object is None
    assert await keeper.keep(event) is None  # a replayed record: kept once
    await enforcer.stop()
    assert action.quarantine is not None
    key = action.quarantine.key
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    assert key == f"kept/uploads/{day}/{event.verdict.request_id}.jpg"
    got = s3.get_object(Bucket=locked, Key=key)
    assert got["Body"].read() == data
    assert got["Metadata"]["pictguard-upload-uploader"] == "%40someone%40lemmy.example"
    assert got["ObjectLockMode"] == "GOVERNANCE"
    assert got["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=364)
    published = await tap.take()
    assert [(a.action, a.outcome) for a in published] == [
        (ActionType.QUARANTINE, ActionOutcome.DONE)
    ]
    # The verdict of a fast-path rejection exists nowhere else: recorded with the action.
    row = await state.fetchone(
        "SELECT decision FROM verdicts WHERE verdict_id = ?", (event.verdict.verdict_id,)
    )
    assert row == ("flag_csam",)


async def test_a_store_that_refuses_leaves_a_failed_action(env: Any, state: SqliteState) -> None:
    settings, bus, stores, _tap = await env(upload_evidence="s3://no-such-evidence-bucket/")
    enforcer = Enforcer(bus, settings, stores, state)
    await enforcer.start()
    keeper = UploadKeeper(enforcer, settings, stores)
    [warning] = await keeper.start()
    assert "no-such-evidence-bucket" in warning
    action = await keeper.keep(evidence(photo_jpeg(78, 320, 240)))
    await enforcer.stop()
    assert action is not None and action.outcome is ActionOutcome.FAILED
    assert "keeping the rejected upload failed" in (action.detail or "")


def test_the_api_keeps_only_rejections_the_policy_quarantines() -> None:
    from pipeline.bus.memory import MemoryBus

    policy = load_settings().enforce.action_policy()  # csam: quarantine, nsfw: report
    sender = EvidenceSender(MemoryBus(), "t.upload-evidence", policy)
    csam = Outcome(False, Decision.FLAG_CSAM, "fast", {"decision": "flag_csam"})
    nsfw = Outcome(False, Decision.FLAG_NSFW, "fast", {"decision": "flag_nsfw"})
    timeout = Outcome(False, None, "timeout")
    allowed = Outcome(True, Decision.ALLOW, "model", {"decision": "allow"})
    assert sender.wanted(csam)
    assert not any(sender.wanted(o) for o in (nsfw, timeout, allowed))
    # A fast-path answer has findings, no verdict: one is made (sync lane, API source).
    made = verdict_of(csam)
    assert (made.lane, made.source, made.decision) == (Lane.SYNC, Source.API, Decision.FLAG_CSAM)
    model = Verdict(request_id="r" * 32, decision=Decision.FLAG_CSAM, lane=Lane.SYNC)
    body = model.model_dump(mode="json", exclude_none=True)
    assert verdict_of(Outcome(False, Decision.FLAG_CSAM, "model", body)) == model
