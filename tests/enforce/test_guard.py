"""The blast-radius guard: a flood of flagged verdicts must not empty the bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from enforce.admin import EnforceAdmin, EnforceContext
from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import ActionOutcome, ActionType, Decision, Verdict, encode
from pipeline.state.sqlite import SqliteState
from pipeline.topics import VERDICTS
from tests.enforce.admin_cli import json_out, pictguard, write_config
from tests.enforce.helpers import verdict_for
from tests.enforce.receivers import http_receiver
from tests.media import photo_jpeg


class Clock:
    """Deterministic wall clock: tests advance it, nothing sleeps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def batch(settings: Any, verdicts: list[Verdict]) -> list[Message]:
    return [
        Message(settings.topic(VERDICTS), encode(v), v.key.encode(), offset=i)
        for i, v in enumerate(verdicts)
    ]


def count_objects(s3: Any, bucket: str) -> int:
    return sum(
        page.get("KeyCount", 0)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    )


async def test_flood_trips_the_guard_and_resume_releases(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    keys = [f"flood/{i:03d}.jpg" for i in range(200)]
    for key in keys:
        put(bucket, key, b"x" * 16)
    clock = Clock()
    with http_receiver() as rx:
        settings, bus, stores, tap = await env(
            on_flag_csam="delete",
            # The per-minute limit is what this flood meets (not the cap before the ratio).
            guard={
                "max_destructive_per_minute": 20,
                "max_destructive_per_hour": 200,
                "max_destructive_before_ratio": 1000,
                "max_flagged_ratio": 1.0,
            },
            notify={
                "channels": [
                    {
                        "type": "webhook",
                        "url": rx.url,
                        "secret": "guard-test-secret-0123456789",
                        "digest_interval_s": 3600,
                        "retry_initial_s": 0,
                    }
                ]
            },
        )
        stage = EnforceStage(bus, settings, stores, state, clock=clock)
        await stage.start()
        # 200 flagged verdicts in 10 s, in batches as the consumer would read them.
        verdicts = [verdict_for(bucket, key, Decision.FLAG_CSAM) for key in keys]
        for start in range(0, 200, 50):
            await stage.handle(batch(settings, verdicts[start : start + 50]))
            clock.now += 2.5
        await stage.stop()
        alerts = [r.json() for r in rx.requests if r.json()["event"] == "guard_tripped"]

    actions = await tap.take()
    outcomes = [a.outcome for a in actions]
    assert outcomes.count(ActionOutcome.DONE) == 20
    assert outcomes.count(ActionOutcome.HELD) == 180
    assert {a.action for a in actions} == {ActionType.DELETE}
    assert count_objects(s3, bucket) == 180
    assert len(alerts) == 1
    assert "last minute" in alerts[0]["reason"]
    assert "pictguard enforce resume" in alerts[0]["next_step"]

    # The trip survives a restart: a new process keeps holding.
    late = "flood/late.jpg"
    put(bucket, late, b"y")
    clock.now += 3600  # even once every window has passed
    restarted = EnforceStage(bus, settings, stores, state, clock=clock)
    await restarted.start()
    await restarted.handle(batch(settings, [verdict_for(bucket, late, Decision.FLAG_CSAM)]))
    [held] = await tap.take()
    assert held.outcome is ActionOutcome.HELD
    status = await _status(settings, stores, state, bus)
    assert status["guard"]["tripped"] and status["held"] == 181

    # An admin reviews and resumes (another process, as the CLI would be).
    ctx = EnforceContext(settings, stores, state, bus)
    async with EnforceAdmin(ctx) as admin:
        result = await admin.resume(reason="model checked")
    assert len(result.actions) == 181
    assert {a.outcome for a in result.actions} == {ActionOutcome.DONE}
    assert count_objects(s3, bucket) == 0
    assert len(await tap.take()) == 181
    assert (await _status(settings, stores, state, bus))["held"] == 0

    # The running stage sees the resume and acts again.
    put(bucket, "after.jpg", b"z")
    await restarted.handle(batch(settings, [verdict_for(bucket, "after.jpg")]))
    await restarted.stop()
    [after] = await tap.take()
    assert after.outcome is ActionOutcome.DONE


async def test_flagged_ratio_trips_the_guard(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    settings, bus, stores, tap = await env(
        on_flag_nsfw="quarantine",
        guard={
            "max_destructive_per_minute": 1000,
            "ratio_window": 20,
            "min_verdicts": 10,
            "max_flagged_ratio": 0.5,
        },
    )
    stage = EnforceStage(bus, settings, stores, state, clock=Clock())
    await stage.start()
    # One in three flagged: normal for this instance.
    normal = []
    for i in range(15):
        key = f"n{i}.jpg"
        put(bucket, key)
        normal.append(
            verdict_for(bucket, key, Decision.FLAG_NSFW if i % 3 == 0 else Decision.ALLOW)
        )
    for v in normal:  # one at a time, so the window's content is exact
        await stage.handle(batch(settings, [v]))
    assert {a.outcome for a in await tap.take()} == {ActionOutcome.DONE}
    # Then the model starts flagging everything.
    broken = []
    for i in range(15):
        key = f"b{i}.jpg"
        put(bucket, key)
        broken.append(verdict_for(bucket, key, Decision.FLAG_NSFW))
    for v in broken:
        await stage.handle(batch(settings, [v]))
    await stage.stop()
    outcomes = [a.outcome for a in await tap.take()]
    # 5 of 15 flagged; the ratio passes 50 % of the last 20 (11 of 20) at the 7th broken one.
    assert outcomes == [ActionOutcome.DONE] * 6 + [ActionOutcome.HELD] * 9
    assert "verdicts would delete or quarantine" in (stage.enforcer.guard.trip.reason or "")


async def test_guard_can_be_disabled(env: Any, state: SqliteState, bucket: str, put: Any) -> None:
    settings, bus, stores, tap = await env(
        on_flag_csam="delete", guard={"enabled": False, "max_destructive_per_minute": 1}
    )
    stage = EnforceStage(bus, settings, stores, state, clock=Clock())
    await stage.start()
    verdicts = []
    for i in range(5):
        put(bucket, f"{i}.jpg")
        verdicts.append(verdict_for(bucket, f"{i}.jpg"))
    await stage.handle(batch(settings, verdicts))
    await stage.stop()
    assert {a.outcome for a in await tap.take()} == {ActionOutcome.DONE}


async def test_resume_discard_keeps_the_objects(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    settings, bus, stores, tap = await env(
        on_flag_csam="delete", guard={"max_destructive_per_minute": 1}
    )
    stage = EnforceStage(bus, settings, stores, state, clock=Clock())
    await stage.start()
    for key in ("a.jpg", "b.jpg", "c.jpg"):
        put(bucket, key)
    await stage.handle(
        batch(settings, [verdict_for(bucket, k) for k in ("a.jpg", "b.jpg", "c.jpg")])
    )
    await stage.stop()
    assert [a.outcome for a in await tap.take()].count(ActionOutcome.HELD) == 2
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        result = await admin.resume(discard=True, reason="false alarm")
    assert [(a.action, a.outcome) for a in result.actions] == [
        (ActionType.REPORT, ActionOutcome.DONE)
    ] * 2
    assert all("discarded" in (a.detail or "") for a in result.actions)
    assert count_objects(s3, bucket) == 2


async def _status(settings: Any, stores: Any, state: SqliteState, bus: Any) -> dict[str, Any]:
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        return await admin.status()


def _blocklist_csv(path: Path, images: list[bytes]) -> Path:
    rows = "".join(
        f"{hashlib.sha256(data).hexdigest()},report #{i}\n" for i, data in enumerate(images)
    )
    path.write_text("sha256,reason\n" + rows)
    return path


def test_hash_list_hits_arriving_first_cannot_act_before_the_ratio_is_judged(
    tmp_path: Path,
) -> None:
    """40 of 60 photos are on the blocklist; their verdicts reach enforce before any ratio
    can be judged (50 verdicts). The guard trips after a bounded number of quarantines, the
    scan summary says so, and the admin commands do not repeat it."""
    media = tmp_path / "media"
    media.mkdir()
    photos = [photo_jpeg(7000 + i, 320, 240) for i in range(60)]
    blocked = photos[:40]
    for i, data in enumerate(photos):
        # Blocklisted names sort first: the listing hands them to classify first.
        (media / f"{'a' if i < 40 else 'b'}-{i:02d}.jpg").write_bytes(data)
    config = write_config(
        tmp_path / "pictguard.yaml",
        {
            "storage": {"state_dir": str(tmp_path / "state")},
            "classify": {"classifiers": ["hashlist"]},
            "enforce": {
                "on_flag_csam": "quarantine",
                "quarantine": str(tmp_path / "quarantine"),
                # A busy instance raised the rate limit; the cap before the ratio stays.
                "guard": {"max_destructive_per_minute": 100},
            },
        },
    )
    imported = pictguard(
        config, "hashes", "import", "--block", str(_blocklist_csv(tmp_path / "bl.csv", blocked))
    )
    assert imported.returncode == 0, imported.stderr

    scan = pictguard(config, "scan", str(media), "--json")
    summary = json_out(scan)

    assert summary["flag_csam"] == 40 and summary["clean"] == 20
    assert summary["actions"] == {"quarantine:done": 10, "quarantine:held": 30}
    assert summary["held"] == 30
    assert "before the flagged ratio is judged" in (summary["guard_trip"] or "")
    assert "BLAST-RADIUS GUARD TRIPPED" in scan.stderr
    assert len(list((tmp_path / "quarantine").rglob("*.jpg"))) == 10  # keyed by source
    assert len(list(media.glob("a-*.jpg"))) == 30  # the held ones are still in place

    # The audit says where each quarantined image went and what matched.
    audit = pictguard(config, "audit", "--action", "quarantine", "--outcome", "done", "--json")
    done = json_out(audit)
    assert len(done) == 10
    for row in done:
        assert f"moved to file://{tmp_path / 'quarantine'}" in row["detail"]
        assert "matched blocklist:sha256" in row["detail"]
    # Admin commands load the tripped guard without announcing it each time...
    assert "still tripped" not in audit.stderr + audit.stdout
    # ...`enforce status` says it, and so does the next run of enforce, once.
    status = pictguard(config, "enforce", "status")
    assert "TRIPPED" in status.stdout and "held actions: 30" in status.stdout
    again = pictguard(config, "scan", str(media), "--json", "--restart")
    assert again.stderr.count("still tripped from before the restart") == 1
    rescan = json_out(again)
    # The 30 held photos are seen again: their actions wait for review already, so this
    # scan takes none and counts them as already handled; the guard still holds them.
    assert rescan["actions"] == {} and rescan["already_handled"] == {"quarantine": 30}
    assert rescan["held"] == 30
    assert again.returncode == scan.returncode == 3  # the guard holds actions
