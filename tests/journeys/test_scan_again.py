"""An admin's first week with one folder: scan, scan again, allow a false positive, scan,
block a spammer's image, a copy of it arrives, scan, read the audit.

"Flagged" images are on the blocklist (`pictguard hashes add --block`), never objectionable.
"""

from __future__ import annotations

from pathlib import Path

from tests.journeys.helpers import BROKEN, Admin, acted_twice, outcomes, write_media
from tests.media import MediaItem


def quarantined_copies(admin: Admin, data: bytes) -> list[Path]:
    return [
        p for p in (admin.home / "quarantine").rglob("*") if p.is_file() and p.read_bytes() == data
    ]


def test_scan_scan_again_allow_block_audit(tmp_path: Path, journey_media: list[MediaItem]) -> None:
    admin = Admin.at(tmp_path)
    media = tmp_path / "media"
    # Deep keys, as media stores have: the summary must still show the file names.
    uploads = media / "2024" / "06" / "instance.example" / "users" / "alice" / "uploads"
    paths = write_media(uploads, journey_media)
    bad, spam = paths["photo-0800x0600.jpg"], paths["screenshot-1280x0800.png"]
    bad_bytes, spam_bytes = bad.read_bytes(), spam.read_bytes()

    added = admin.run("hashes", "add", "--block", "--reason", "known bad (test)", str(bad))
    assert added.returncode == 0, added

    # 1. The first scan flags the blocklisted photo and quarantines it: exit status 1.
    first = admin.run("scan", str(media))
    assert first.returncode == 1, first
    table = first.table()
    assert table["scanned"] == "11"
    assert table["clean"] == "7"
    assert table["flagged"] == "1 (csam 1, nsfw 0)"
    assert table["errors"] == "3"
    assert table["actions"] == "quarantine:done 1, report:done 3"
    assert table["classifiers"] == "hashlist, nudenet"
    assert "WARNING: no CSAM-capable classifier ran" in first.stdout
    # At 80 columns the object column keeps the informative end of the key.
    assert "photo-0800x0600.jpg" in first.stdout, first
    assert not bad.exists()
    assert len(quarantined_copies(admin, bad_bytes)) == 1

    # 2. The same scan again ends (it waited forever when the first had reported errors),
    # acts on nothing, and says what it skipped: exit status 0, nothing flagged is left.
    second = admin.run("scan", str(media))
    assert second.returncode == 0, second
    table = second.table()
    assert table["scanned"] == "10"
    assert table["actions"] == "none"
    assert table["already handled"] == "3 skipped, decided by an earlier run (report 3)"

    # 3. The photo was a false positive: allow it; it comes back, byte-identical.
    allowed = admin.run("allow", str(bad), "--reason", "false positive: reviewed (test)")
    assert allowed.returncode == 0, allowed
    assert bad.read_bytes() == bad_bytes

    third = admin.run("scan", str(media), "--json")
    assert third.returncode == 0, third
    summary = third.json()
    assert summary["completed"] is True
    assert (summary["scanned"], summary["clean"], summary["errors"]) == (11, 8, 3)
    assert summary["actions"] == {}
    assert summary["already_handled"] == {"report": 3}
    assert summary["classifiers"] == ["hashlist", "nudenet"]
    assert summary["csam_detection"] is False
    assert summary["exit_status"] == 0  # errors are reported, not "found"
    assert bad.exists()

    # 4. Block a spammer's screenshot: it goes to quarantine at once. A federated copy of it
    # lands later; the next scan knows it by its hash.
    blocked = admin.run("block", str(spam), "--reason", "spam (test)")
    assert blocked.returncode == 0, blocked
    assert not spam.exists()
    copy = media / "2024" / "07" / "cache" / "reshared.png"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(spam_bytes)

    fourth = admin.run("scan", str(media))
    assert fourth.returncode == 1, fourth
    table = fourth.table()
    assert table["flagged"] == "1 (csam 1, nsfw 0)"
    assert table["actions"] == "quarantine:done 1"
    assert table["already handled"] == "3 skipped, decided by an earlier run (report 3)"
    assert "reshared.png" in fourth.stdout
    assert not copy.exists()
    assert len(quarantined_copies(admin, spam_bytes)) == 2

    # 5. The audit: every action once, every repeat recorded as a duplicate.
    rows = admin.audit()
    assert acted_twice(rows) == []
    counts = outcomes(rows)
    for name in BROKEN:
        broken = f"file://{paths[name].resolve()}"
        assert counts[(broken, "report", "done")] == 1
        assert counts[(broken, "report", "duplicate")] == 3  # scans 2, 3 and 4
    quarantines = sorted(
        obj
        for (obj, action, outcome) in counts
        if (action, outcome)
        == (
            "quarantine",
            "done",
        )
    )
    assert quarantines == sorted(f"file://{p.resolve()}" for p in (bad, spam, copy))
    assert counts[(f"file://{bad.resolve()}", "restore", "done")] == 1
