"""After a quarantine on a pict-rs bucket: purge in pict-rs, then Lemmy per the admin's policy.

Real HTTP throughout: FakePictrs storing in a moto bucket, FakeLemmy in front of it, the
enforcer as the stage and the admin commands run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from enforce.admin import EnforceAdmin, EnforceContext
from enforce.notify import action_notice
from enforce.notify.message import render_text
from pipeline.events import ActionOutcome, ActionType, Decision, EnforcementAction
from pipeline.state.sqlite import SqliteState
from tests.enforce.helpers import exists
from tests.enforce.platform.world import (
    ADMIN_PASSWORD,
    LemmyWorld,
    clean_images,
    flagged,
    platform_config,
    s3_ref,
    seed_image,
)
from tests.fakes import FakePictrs, RecordingEndpoint
from tests.media import photo_jpeg

pytestmark = pytest.mark.timeout(120)


def by_action(actions: list[EnforcementAction]) -> dict[ActionType, list[EnforcementAction]]:
    out: dict[ActionType, list[EnforcementAction]] = {}
    for a in actions:
        out.setdefault(a.action, []).append(a)
    return out


@pytest.fixture
def quarantine_bucket(s3: Any) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


async def test_quarantine_purges_every_alias_and_variant_and_reports_on_lemmy(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
    s3: Any,
) -> None:
    clean = clean_images(pictrs, 3)
    bad = seed_image(pictrs, photo_jpeg(7, 640, 480), aliases=2, thumbnail=True)
    post, comment = world.uses(bad)
    lemmy = world.lemmy
    enf, tap = await enforcer(
        quarantine=f"s3://{quarantine_bucket}/",
        platform=platform_config(pictrs, f"s3://{bucket}", lemmy),
    )

    action = await enf.enforce(flagged(s3_ref(bucket, bad.identifier), bad.data))

    assert action is not None and action.outcome is ActionOutcome.DONE
    # pict-rs: no alias, no variant, no stored file of the image is left.
    assert not set(bad.aliases) & set(pictrs.aliases())
    stored = pictrs.stored_identifiers()
    assert bad.identifier not in stored and not set(bad.variants) & stored
    assert {c.identifier for c in clean} <= stored
    assert exists(s3, quarantine_bucket, f"s3/{bucket}/{bad.identifier}")  # keyed by source
    # Lemmy: the post and the comment are reported by pictguard's account (default policy).
    reports = {(r.kind, r.object_id): r for r in lemmy.reports.values()}
    assert set(reports) == {("post", post), ("comment", comment)}
    assert all(r.creator_id == world.admin_id and not r.resolved for r in reports.values())
    assert action.verdict_id in reports[("post", post)].reason
    assert not lemmy.persons[world.uploader_id].banned
    assert not lemmy.posts[post].removed

    events = by_action(await tap.take())
    (purge,) = events[ActionType.PURGE]
    assert purge.outcome is ActionOutcome.DONE and purge.platform is not None
    assert purge.platform["hash"] == bad.hash_hex
    assert sorted(purge.platform["aliases"]) == sorted(bad.aliases)
    (moderate,) = events[ActionType.MODERATE]
    assert moderate.outcome is ActionOutcome.DONE and moderate.platform is not None
    info = moderate.platform
    assert info["uploader"] == {"person_id": world.uploader_id, "name": "uploader"}
    assert info["posts"] == [post] and info["comments"] == [comment]
    assert sorted(s["step"] for s in info["steps"]) == ["report", "report"]
    # The notification names Lemmy's ids and links to its moderation pages, never the image.
    text = render_text(action_notice(moderate, enf.config.notify).payload)
    assert f"{lemmy.url}/post/{post}" in text and f"{lemmy.url}/u/uploader" in text
    assert f"{lemmy.url}/reports" in text
    assert "/pictrs/image/" not in text and "pictrs" not in " ".join(info["links"])


@pytest.mark.parametrize(
    ("policy", "model_only", "expect"),
    [
        (["remove"], False, "removed"),
        (["purge"], False, "purged"),
        (["report", "ban"], False, "banned"),
        (["report", "ban"], True, "ban refused"),
        ({"on_flag_csam": ["ban"], "ban_model_only": True}, True, "banned"),
    ],
)
async def test_lemmy_policy_per_decision(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
    policy: Any,
    model_only: bool,
    expect: str,
) -> None:
    bad = seed_image(pictrs, photo_jpeg(11, 480, 360), aliases=2)
    post, comment = world.uses(bad)
    lemmy = world.lemmy
    lemmy_policy = policy if isinstance(policy, dict) else {"on_flag_csam": policy}
    enf, tap = await enforcer(
        quarantine=f"s3://{quarantine_bucket}/",
        platform=platform_config(pictrs, f"s3://{bucket}", lemmy, **lemmy_policy),
    )

    await enf.enforce(flagged(s3_ref(bucket, bad.identifier), bad.data, model_only=model_only))

    (moderate,) = by_action(await tap.take())[ActionType.MODERATE]
    assert moderate.platform is not None
    steps = {(s["step"], s["outcome"]) for s in moderate.platform["steps"]}
    uploader = lemmy.persons[world.uploader_id]
    if expect == "removed":
        assert lemmy.posts[post].removed and lemmy.comments[comment].removed
        assert not lemmy.reports and not uploader.banned
        assert [m.kind for m in lemmy.modlog] == ["mod_remove_post", "mod_remove_comment"]
    elif expect == "purged":
        assert post not in lemmy.posts and comment not in lemmy.comments
        # Purging the post purged its comments with it.
        assert [m.kind for m in lemmy.modlog] == ["admin_purge_post"]
        assert ("purge", "with its post") in steps
    elif expect == "banned":
        assert uploader.banned and ("ban", "done") in steps
        (ban,) = [m for m in lemmy.modlog if m.kind == "mod_ban"]
        assert ban.target_id == world.uploader_id and moderate.verdict_id in str(ban.reason)
        assert not lemmy.posts[post].removed  # a ban without remove_data keeps their posts
    else:
        assert not uploader.banned and ("ban", "refused") in steps
        assert "model-only" in (moderate.detail or "")
        assert len(lemmy.reports) == 2  # the report still goes out
    assert moderate.outcome is ActionOutcome.DONE


async def test_a_report_decision_reports_but_neither_purges_nor_removes(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
) -> None:
    image = seed_image(pictrs, photo_jpeg(12, 400, 300))
    post, _ = world.uses(image)
    lemmy = world.lemmy
    enf, tap = await enforcer(
        on_flag_nsfw="report",
        platform=platform_config(
            pictrs, f"s3://{bucket}", lemmy, on_flag_nsfw=["report", "remove", "ban"]
        ),
    )
    verdict = flagged(s3_ref(bucket, image.identifier), image.data, decision=Decision.FLAG_NSFW)
    await enf.enforce(verdict)

    assert pictrs.aliases() == image.aliases  # reported only: pict-rs keeps it
    assert not lemmy.posts[post].removed and not lemmy.persons[world.uploader_id].banned
    assert len(lemmy.reports) == 2
    events = by_action(await tap.take())
    assert ActionType.PURGE not in events
    (moderate,) = events[ActionType.MODERATE]
    assert "skipped: only a quarantine or delete" in (moderate.detail or "")


async def test_a_repeat_does_nothing_twice_and_a_failed_step_is_retried_by_the_replay(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
) -> None:
    bad = seed_image(pictrs, photo_jpeg(13, 400, 300))
    world.uses(bad)
    lemmy = world.lemmy
    admin = lemmy.persons[world.admin_id]
    admin.password = "changed-under-pictguard"
    enf, tap = await enforcer(
        quarantine=f"s3://{quarantine_bucket}/",
        platform=platform_config(pictrs, f"s3://{bucket}", lemmy),
    )
    verdict = flagged(s3_ref(bucket, bad.identifier), bad.data)

    await enf.enforce(verdict)
    first = by_action(await tap.take())
    assert first[ActionType.PURGE][0].outcome is ActionOutcome.DONE
    (failed,) = first[ActionType.MODERATE]
    assert failed.outcome is ActionOutcome.FAILED and "login" in (failed.detail or "")
    assert "changed-under-pictguard" not in (failed.detail or "")
    assert not lemmy.reports

    admin.password = ADMIN_PASSWORD
    # The bus delivers the verdict again (a crash, a rebalance): the storage action is a
    # duplicate, the purge is not repeated, the Lemmy steps that failed are done now.
    again = await enf.enforce(verdict)
    assert again is not None and again.outcome is ActionOutcome.DUPLICATE
    second = by_action(await tap.take())
    assert ActionType.PURGE not in second
    assert second[ActionType.MODERATE][0].outcome is ActionOutcome.DONE
    assert len(lemmy.reports) == 2

    # A third delivery, and a fresh verdict on the same content: nothing at all.
    await enf.enforce(verdict)
    await enf.enforce(flagged(s3_ref(bucket, bad.identifier), bad.data))
    third = by_action(await tap.take())
    assert set(third) == {ActionType.QUARANTINE}
    assert all(a.outcome is ActionOutcome.DUPLICATE for a in third[ActionType.QUARANTINE])
    assert len(lemmy.reports) == 2


async def test_the_guard_holds_the_platform_steps_with_the_quarantine(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
) -> None:
    first = seed_image(pictrs, photo_jpeg(21, 400, 300))
    second = seed_image(pictrs, photo_jpeg(22, 400, 300))
    world.uses(first)
    _, comment = world.uses(second)
    lemmy = world.lemmy
    enf, tap = await enforcer(
        quarantine=f"s3://{quarantine_bucket}/",
        guard={"max_destructive_per_minute": 1},
        platform=platform_config(pictrs, f"s3://{bucket}", lemmy, on_flag_csam=["remove"]),
    )

    await enf.enforce(flagged(s3_ref(bucket, first.identifier), first.data))
    held = await enf.enforce(flagged(s3_ref(bucket, second.identifier), second.data))

    assert held is not None and held.outcome is ActionOutcome.HELD
    assert set(second.aliases) <= set(pictrs.aliases())  # not purged while held
    assert not lemmy.comments[comment].removed
    events = by_action(await tap.take())
    assert len(events[ActionType.PURGE]) == 1 and len(events[ActionType.MODERATE]) == 1

    released = await enf.resume(note="reviewed")

    assert [a.outcome for a in released.actions] == [ActionOutcome.DONE]
    assert not set(second.aliases) & set(pictrs.aliases())
    assert lemmy.comments[comment].removed
    after = by_action(await tap.take())
    assert len(after[ActionType.PURGE]) == 1 and len(after[ActionType.MODERATE]) == 1


async def test_allow_reimports_under_the_old_aliases_and_undoes_the_moderation(
    enforcer: Callable[..., Any],
    env: Callable[..., Any],
    state: SqliteState,
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
    s3: Any,
) -> None:
    bad = seed_image(pictrs, photo_jpeg(31, 400, 300), aliases=2, thumbnail=True)
    post, comment = world.uses(bad)
    lemmy = world.lemmy
    config = platform_config(
        pictrs, f"s3://{bucket}", lemmy, on_flag_csam=["report", "remove", "ban"]
    )
    enf, _ = await enforcer(quarantine=f"s3://{quarantine_bucket}/", platform=config)
    await enf.enforce(flagged(s3_ref(bucket, bad.identifier), bad.data))
    assert lemmy.persons[world.uploader_id].banned and lemmy.posts[post].removed
    assert not set(bad.aliases) & set(pictrs.aliases())

    settings, bus, stores, tap = await env(quarantine=f"s3://{quarantine_bucket}/", platform=config)
    ctx = EnforceContext(settings, stores, state, bus)
    async with EnforceAdmin(ctx) as admin:
        result = await admin.allow(bad.sha256, reason="false positive", author="alice")

    events = by_action(await tap.take())
    assert [a.outcome for a in events[ActionType.RESTORE]] == [ActionOutcome.DONE]
    (reimport,) = events[ActionType.REIMPORT]
    assert reimport.outcome is ActionOutcome.DONE, reimport.detail
    # pict-rs serves the image again under the same aliases and the same hash.
    assert set(bad.aliases) <= set(pictrs.aliases())
    assert pictrs.hash_of(bad.aliases[0]) == bad.hash_hex
    new_identifier = pictrs.identifier_of(bad.aliases[0])
    assert new_identifier != bad.identifier and exists(s3, bucket, new_identifier)
    # The restored copy at the old key is nobody's file any more: removed.
    assert not exists(s3, bucket, bad.identifier)
    # Lemmy: unbanned, post and comment back, pictguard's reports resolved.
    assert not lemmy.persons[world.uploader_id].banned
    assert not lemmy.posts[post].removed and not lemmy.comments[comment].removed
    assert all(r.resolved for r in lemmy.reports.values())
    (undo,) = events[ActionType.MODERATE]
    assert undo.platform is not None and undo.platform["phase"] == "undo"
    assert undo.outcome is ActionOutcome.DONE, undo.detail
    assert "allowlisted" in result.summary


async def test_restore_of_a_model_flag_is_refused_by_validation_until_allowed(
    enforcer: Callable[..., Any],
    env: Callable[..., Any],
    state: SqliteState,
    pictrs: FakePictrs,
    bucket: str,
    quarantine_bucket: str,
    s3: Any,
) -> None:
    bad = seed_image(pictrs, photo_jpeg(41, 400, 300))
    config = platform_config(pictrs, f"s3://{bucket}")
    enf, _ = await enforcer(quarantine=f"s3://{quarantine_bucket}/", platform=config)
    await enf.enforce(flagged(s3_ref(bucket, bad.identifier), bad.data, model_only=True))
    assert not pictrs.aliases()

    # pictguard's validate API still says no to this image (it is not allowlisted).
    with RecordingEndpoint(406) as validator:
        pictrs.external_validation = f"{validator.url}/api/v1/scan/pictrs"
        settings, bus, stores, tap = await env(
            quarantine=f"s3://{quarantine_bucket}/", platform=config
        )
        async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
            await admin.restore(bad.sha256, reason="looked fine")
        assert len(validator.requests) == 1

    (reimport,) = by_action(await tap.take())[ActionType.REIMPORT]
    assert reimport.outcome is ActionOutcome.FAILED
    assert "pictguard allow" in (reimport.detail or "")
    assert not pictrs.aliases()
    assert exists(s3, bucket, bad.identifier)  # restored in the bucket, kept for a retry


async def test_what_pict_rs_deleted_after_a_rejection_is_left_alone(
    enforcer: Callable[..., Any],
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
) -> None:
    seen: list[set[str]] = []
    data = photo_jpeg(51, 400, 300)

    def reject(_: Any) -> int:
        seen.append(pictrs.stored_identifiers())  # what a bucket watcher saw created
        return 406

    with RecordingEndpoint(respond=reject) as validator:
        pictrs.external_validation = f"{validator.url}/api/v1/scan/pictrs"
        response = httpx.post(
            f"{pictrs.url}/image", files=[("images[]", ("a.jpg", data, "image/jpeg"))]
        )
    assert response.status_code == 400
    (key,) = seen[0]
    assert key not in pictrs.stored_identifiers() and not pictrs.aliases()
    enf, tap = await enforcer(
        quarantine=f"s3://{quarantine_bucket}/",
        platform=platform_config(pictrs, f"s3://{bucket}", world.lemmy),
    )

    # The scanner read the object while it existed and flagged it; by now it is gone.
    action = await enf.enforce(flagged(s3_ref(bucket, key), data))

    assert action is not None and action.outcome is ActionOutcome.ALREADY_ABSENT
    assert set(by_action(await tap.take())) == {ActionType.QUARANTINE}
    assert enf.platform is not None and enf.platform.index is not None
    assert enf.platform.index.hashes_read == 0  # not a single call to pict-rs
    assert not world.lemmy.reports


async def test_allowing_a_held_image_tells_the_platform_nothing(
    enforcer: Callable[..., Any],
    env: Callable[..., Any],
    state: SqliteState,
    pictrs: FakePictrs,
    world: LemmyWorld,
    bucket: str,
    quarantine_bucket: str,
) -> None:
    first = seed_image(pictrs, photo_jpeg(81, 400, 300))
    second = seed_image(pictrs, photo_jpeg(82, 400, 300))
    world.uses(first)
    world.uses(second)
    lemmy = world.lemmy
    config = platform_config(pictrs, f"s3://{bucket}", lemmy)
    enforce = {
        "quarantine": f"s3://{quarantine_bucket}/",
        "guard": {"max_destructive_per_minute": 1},
        "platform": config,
    }
    enf, _ = await enforcer(**enforce)
    await enf.enforce(flagged(s3_ref(bucket, first.identifier), first.data))
    held = await enf.enforce(flagged(s3_ref(bucket, second.identifier), second.data))
    assert held is not None and held.outcome is ActionOutcome.HELD
    reports_before = len(lemmy.reports)

    settings, bus, stores, tap = await env(**enforce)
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.allow(second.sha256, reason="a cat", author="alice")

    events = by_action(await tap.take())
    assert [a.outcome for a in events[ActionType.REPORT]] == [ActionOutcome.DONE]  # discarded
    assert set(events) == {ActionType.REPORT}
    assert len(lemmy.reports) == reports_before
    assert set(second.aliases) <= set(pictrs.aliases())
