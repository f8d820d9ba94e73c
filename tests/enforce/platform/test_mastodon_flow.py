"""Mastodon: from a quarantined media file to its status and account, report and act.

FakeMastodon over HTTP; ``tootctl media lookup`` answered by the fake (injected runner) or
by a real executable standing in for tootctl (the configured command).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enforce.admin import EnforceAdmin, EnforceContext
from enforce.platform.mastodon import parse_lookup, parse_media_key
from pipeline.events import ActionOutcome, ActionType, EnforcementAction
from pipeline.state.sqlite import SqliteState
from tests.enforce.platform.world import file_ref, flagged, tootctl_of
from tests.fakes import FakeMastodon
from tests.media import photo_jpeg

pytestmark = pytest.mark.timeout(120)
SCOPES = "write:reports admin:read:accounts admin:write:accounts admin:write:reports"


@dataclass
class Instance:
    mastodon: FakeMastodon
    token: str
    root: Path
    account_id: str
    status_id: str
    media_id: str
    key: str
    data: bytes


@pytest.fixture
def instance(tmp_path: Path) -> Any:
    """A Mastodon with a staff bot and a local user's status with one photo on disk."""
    with FakeMastodon() as mastodon:
        bot = mastodon.add_account("pictguard", role="Moderator")
        token = mastodon.add_token(bot, SCOPES)
        account = mastodon.add_account("poster")
        status = mastodon.add_status(account, "<p>holiday</p>", media=["9f3a0c1d2e4b5a6c.jpeg"])
        (media_id,) = [str(m.id) for m in mastodon.media.values() if str(m.status_id) == status]
        root = tmp_path / "public" / "system"
        key = mastodon.media_storage_key(media_id)
        data = photo_jpeg(61, 640, 480)
        (root / key).parent.mkdir(parents=True)
        (root / key).write_bytes(data)
        yield Instance(mastodon, token, root, account, status, media_id, key, data)


def mastodon_config(instance: Instance, **policy: Any) -> dict[str, Any]:
    return {
        "mastodon": {
            "url": instance.mastodon.url,
            "token": instance.token,
            "locations": [str(instance.root)],
            **policy,
        }
    }


def moderation(actions: list[EnforcementAction]) -> list[EnforcementAction]:
    return [a for a in actions if a.action is ActionType.MODERATE]


async def test_report_with_the_status_and_suspend_then_restore_undoes_it(
    enforcer: Callable[..., Any],
    env: Callable[..., Any],
    state: SqliteState,
    instance: Instance,
    tmp_path: Path,
) -> None:
    mastodon = instance.mastodon
    config = mastodon_config(instance, on_flag_csam=["report", "suspend"])
    quarantine = str(tmp_path / "quarantine")
    enf, tap = await enforcer(tootctl=tootctl_of(mastodon), quarantine=quarantine, platform=config)

    action = await enf.enforce(flagged(file_ref(instance.root, instance.key), instance.data))

    assert action is not None and action.outcome is ActionOutcome.DONE
    (report,) = mastodon.reports.values()
    assert str(report.target_account_id) == instance.account_id
    assert [str(i) for i in report.status_ids] == [instance.status_id]
    assert report.category == "legal" and action.verdict_id in report.comment
    assert mastodon.account_state(instance.account_id)["suspended"]
    (strike,) = mastodon.strikes
    assert strike.action == "suspend" and strike.report_id == report.id and not strike.emailed
    (moderate,) = moderation(await tap.take())
    assert moderate.outcome is ActionOutcome.DONE and moderate.platform is not None
    assert moderate.platform["account_id"] == instance.account_id
    assert moderate.platform["status_id"] == instance.status_id
    assert f"{mastodon.url}/admin/reports/{report.id}" in moderate.platform["links"]
    assert f"{mastodon.url}/admin/accounts/{instance.account_id}" in moderate.platform["links"]
    assert all("media_attachments" not in link for link in moderate.platform["links"])

    settings, bus, stores, tap2 = await env(quarantine=quarantine, platform=config)
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        await admin.restore(action.verdict_id, reason="false positive")

    assert not mastodon.account_state(instance.account_id)["suspended"]
    assert report.action_taken_at is not None  # resolved
    assert (instance.root / instance.key).read_bytes() == instance.data
    (undo,) = moderation(await tap2.take())
    assert undo.platform is not None and undo.platform["phase"] == "undo"
    assert {s["step"] for s in undo.platform["steps"]} == {"resolve report", "undo suspend"}


async def test_model_only_verdict_reports_but_takes_no_account_action(
    enforcer: Callable[..., Any], instance: Instance, tmp_path: Path
) -> None:
    mastodon = instance.mastodon
    enf, tap = await enforcer(
        tootctl=tootctl_of(mastodon),
        quarantine=str(tmp_path / "quarantine"),
        platform=mastodon_config(instance, on_flag_csam=["report", "suspend"]),
    )

    verdict = flagged(file_ref(instance.root, instance.key), instance.data, model_only=True)
    await enf.enforce(verdict)

    assert len(mastodon.reports) == 1 and mastodon.reports[1].category == "legal"
    assert not mastodon.account_state(instance.account_id)["suspended"]
    assert not mastodon.strikes
    (moderate,) = moderation(await tap.take())
    assert moderate.platform is not None
    assert {(s["step"], s["outcome"]) for s in moderate.platform["steps"]} == {
        ("report", "done"),
        ("suspend", "refused"),
    }


async def test_the_configured_tootctl_command_is_run_and_its_failure_explained(
    enforcer: Callable[..., Any], instance: Instance, tmp_path: Path
) -> None:
    mastodon = instance.mastodon
    # A stand-in for `tootctl` (on the host, `docker exec …`): prints what the real one
    # would for the URLs the test prepared, fails like it for anything else.
    url = f"{mastodon.url}/system/{instance.key}"
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({url: mastodon.tootctl_media_lookup(url)[1]}))
    script = tmp_path / "tootctl.py"
    script.write_text(
        "import json, sys\n"
        f"answers = json.load(open({str(answers)!r}))\n"
        "assert sys.argv[1:3] == ['media', 'lookup'], sys.argv\n"
        "if sys.argv[3] in answers:\n"
        "    print(answers[sys.argv[3]])\n"
        "else:\n"
        "    print('Not a media URL'); sys.exit(1)\n"
    )
    enf, tap = await enforcer(
        quarantine=str(tmp_path / "quarantine"),
        platform=mastodon_config(instance, tootctl=[sys.executable, str(script)]),
    )

    await enf.enforce(flagged(file_ref(instance.root, instance.key), instance.data))

    (report,) = mastodon.reports.values()
    assert [str(i) for i in report.status_ids] == [instance.status_id]
    (moderate,) = moderation(await tap.take())
    assert moderate.outcome is ActionOutcome.DONE

    other = mastodon.add_status(instance.account_id, media=["0a1b2c3d4e5f6a7b.png"])
    (media,) = [m.id for m in mastodon.media.values() if str(m.status_id) == other]
    key = mastodon.media_storage_key(media)
    data = photo_jpeg(62, 320, 240)
    (instance.root / key).parent.mkdir(parents=True)
    (instance.root / key).write_bytes(data)
    await enf.enforce(flagged(file_ref(instance.root, key), data))
    (unknown,) = moderation(await tap.take())
    assert unknown.outcome is ActionOutcome.DONE
    assert "tootctl media lookup found no status or account: Not a media URL" in (
        unknown.detail or ""
    )
    assert len(mastodon.reports) == 1


async def test_without_tootctl_the_action_fails_with_what_to_set(
    enforcer: Callable[..., Any], instance: Instance, tmp_path: Path
) -> None:
    enf, tap = await enforcer(
        quarantine=str(tmp_path / "quarantine"),
        platform=mastodon_config(instance, tootctl=[str(tmp_path / "no-such-tootctl")]),
    )
    await enf.enforce(flagged(file_ref(instance.root, instance.key), instance.data))
    (moderate,) = moderation(await tap.take())
    assert moderate.outcome is ActionOutcome.FAILED
    assert "enforce.platform.mastodon.tootctl" in (moderate.detail or "")
    assert not instance.mastodon.reports


def test_remote_media_and_avatars_lead_to_their_account(instance: Instance) -> None:
    mastodon = instance.mastodon
    remote = mastodon.add_account("visitor", domain="remote.example")
    status = mastodon.add_status(remote, media=["c0ffee00c0ffee00.png"])
    (media,) = [m.id for m in mastodon.media.values() if str(m.status_id) == status]
    key = mastodon.media_storage_key(media)
    parsed = parse_media_key(key)
    assert parsed is not None and parsed.remote and parsed.record_id == media
    code, output = mastodon.tootctl_media_lookup(f"{mastodon.url}/system/{key}")
    owner = parse_lookup(output, mastodon.domain)
    assert code == 0 and owner is not None
    assert (owner.username, owner.domain, owner.status_id) == ("visitor", "remote.example", None)

    avatar = f"accounts/avatars/{'/'.join(['000'] * 5)}/{instance.account_id[-3:]}/original/a.png"
    assert parse_media_key(avatar) is not None
    assert parse_media_key("custom_emojis/images/000/000/001/original/blob.png") is not None
    assert parse_media_key("backups/dump.tar.gz") is None


async def test_cached_remote_media_reports_the_remote_account(
    enforcer: Callable[..., Any], instance: Instance, tmp_path: Path
) -> None:
    mastodon = instance.mastodon
    remote = mastodon.add_account("visitor", domain="remote.example")
    mastodon.add_account("visitor")  # a local namesake must not be the one reported
    status = mastodon.add_status(remote, media=["c0ffee00c0ffee00.png"])
    (media,) = [m.id for m in mastodon.media.values() if str(m.status_id) == status]
    key = mastodon.media_storage_key(media)
    data = photo_jpeg(63, 320, 240)
    (instance.root / key).parent.mkdir(parents=True)
    (instance.root / key).write_bytes(data)
    enf, tap = await enforcer(
        tootctl=tootctl_of(mastodon),
        quarantine=str(tmp_path / "quarantine"),
        platform=mastodon_config(instance),
    )

    await enf.enforce(flagged(file_ref(instance.root, key), data))

    (report,) = mastodon.reports.values()
    assert str(report.target_account_id) == remote and report.status_ids == []
    assert not report.forwarded  # forward_remote is off by default
    (moderate,) = moderation(await tap.take())
    assert (
        moderate.platform is not None and moderate.platform["account"] == "visitor@remote.example"
    )


async def test_two_styles_of_one_attachment_make_one_report_kept_until_both_are_restored(
    enforcer: Callable[..., Any],
    env: Callable[..., Any],
    state: SqliteState,
    instance: Instance,
    tmp_path: Path,
) -> None:
    mastodon = instance.mastodon
    small_key = mastodon.media_storage_key(instance.media_id, "small")
    small = photo_jpeg(64, 400, 300)
    (instance.root / small_key).parent.mkdir(parents=True)
    (instance.root / small_key).write_bytes(small)
    config = mastodon_config(instance, on_flag_csam=["report", "silence"])
    quarantine = str(tmp_path / "quarantine")
    enf, tap = await enforcer(tootctl=tootctl_of(mastodon), quarantine=quarantine, platform=config)

    original = await enf.enforce(flagged(file_ref(instance.root, instance.key), instance.data))
    await enf.enforce(flagged(file_ref(instance.root, small_key), small))

    assert len(mastodon.reports) == 1 and len(mastodon.strikes) == 1
    assert mastodon.account_state(instance.account_id)["silenced"]
    first, second = moderation(await tap.take())
    assert {s["outcome"] for s in first.platform["steps"]} == {"done"}  # type: ignore[index]
    assert {s["outcome"] for s in second.platform["steps"]} == {"already_done"}  # type: ignore[index]

    settings, bus, stores, tap2 = await env(quarantine=quarantine, platform=config)
    async with EnforceAdmin(EnforceContext(settings, stores, state, bus)) as admin:
        assert original is not None
        await admin.restore(original.verdict_id, reason="only the original")

    # The small style is still quarantined: its report and the silence stay.
    (report,) = mastodon.reports.values()
    assert report.action_taken_at is not None  # resolved by the silence itself, as Mastodon does
    assert mastodon.account_state(instance.account_id)["silenced"]
    (undo,) = moderation(await tap2.take())
    assert {s["outcome"] for s in undo.platform["steps"]} == {"kept"}  # type: ignore[index]


async def test_a_second_image_of_a_suspended_account_is_still_reported(
    enforcer: Callable[..., Any], instance: Instance, tmp_path: Path
) -> None:
    mastodon = instance.mastodon
    other = mastodon.add_status(instance.account_id, media=["feedfacefeedface.png"])
    (media,) = [m.id for m in mastodon.media.values() if str(m.status_id) == other]
    key = mastodon.media_storage_key(media)
    data = photo_jpeg(65, 320, 240)
    (instance.root / key).parent.mkdir(parents=True)
    (instance.root / key).write_bytes(data)
    enf, tap = await enforcer(
        tootctl=tootctl_of(mastodon),
        quarantine=str(tmp_path / "quarantine"),
        platform=mastodon_config(instance, on_flag_csam=["report", "suspend"]),
    )

    await enf.enforce(flagged(file_ref(instance.root, instance.key), instance.data))
    await enf.enforce(flagged(file_ref(instance.root, key), data))

    assert len(mastodon.reports) == 2 and len(mastodon.strikes) == 1
    second = mastodon.reports[2]
    assert [str(i) for i in second.status_ids] == [other]
    _, later = moderation(await tap.take())
    assert later.outcome is ActionOutcome.DONE
    assert ("suspend", "already_done") in {
        (s["step"], s["outcome"])
        for s in later.platform["steps"]  # type: ignore[index]
    }
