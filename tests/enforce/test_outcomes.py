"""Outcomes an admin reads in the audit: each says what really happened to the object."""

from __future__ import annotations

from pathlib import Path

from tests.enforce.admin_cli import json_out, pictguard, write_config
from tests.media import journey_set, write_set


def test_a_restored_image_still_on_the_blocklist_is_kept_and_said_so(tmp_path: Path) -> None:
    media = tmp_path / "media"
    paths = write_set(journey_set(3), media)
    photo = next(p for p in paths if p.name == "photo-0800x0600.jpg")
    original = photo.read_bytes()
    config = write_config(
        tmp_path / "pictguard.yaml",
        {
            "storage": {"state_dir": str(tmp_path / "state")},
            "classify": {"classifiers": ["hashlist"]},
            "enforce": {"on_flag_csam": "quarantine", "quarantine": str(tmp_path / "q")},
        },
    )
    added = pictguard(config, "hashes", "add", "--block", str(photo), "--reason", "report #9")
    assert added.returncode == 0, added.stderr
    first = json_out(pictguard(config, "scan", str(media), "--json"))
    assert first["actions"]["quarantine:done"] == 1 and not photo.exists()

    # The admin looks at it and puts it back, without allowlisting it.
    restored = pictguard(config, "restore", str(photo), "--reason", "checked by hand")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert photo.read_bytes() == original

    # The next scan sees it again: not a replay of the first verdict, and not acted on.
    again = pictguard(config, "scan", str(media), "--json", "--restart", timeout=90)
    summary = json_out(again)
    assert summary["actions"].get("quarantine:kept") == 1
    assert "quarantine:duplicate" not in summary["actions"]
    assert photo.exists()
    kept = json_out(pictguard(config, "audit", "--outcome", "kept", "--json"))
    assert len(kept) == 1 and "an admin restored it" in kept[0]["detail"]
    assert "pictguard allow" in kept[0]["detail"]

    # Blocking it again is the admin's way to have it acted on.
    blocked = pictguard(config, "block", str(photo), "--reason", "on second thought", "--json")
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    [action] = json_out(blocked)["actions"]
    assert (action["action"], action["outcome"]) == ("quarantine", "done")
    assert not photo.exists()
