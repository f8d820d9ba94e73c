"""A scan stopped with Ctrl-C halfway, then the same command: it continues after the
checkpoint, completes, and acts on nothing twice."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.journeys.helpers import (
    BROKEN,
    COMMAND_TIMEOUT_S,
    Admin,
    Result,
    acted_twice,
    outcomes,
    wait_until,
    write_media,
)
from tests.media import MediaItem


def test_a_scan_stopped_halfway_continues_and_acts_once(
    tmp_path: Path, journey_media: list[MediaItem]
) -> None:
    admin = Admin.at(tmp_path)
    media = tmp_path / "media"
    first_half = write_media(media / "a", journey_media)
    second_half = write_media(media / "b", journey_media)
    files = [*first_half.values(), *second_half.values()]
    bad = first_half["photo-0800x0600.jpg"]
    added = admin.run("hashes", "add", "--block", "--reason", "known bad (test)", str(bad))
    assert added.returncode == 0, added
    checkpoint = f"backfill:{media.resolve()}"

    def saved() -> str | None:
        rows = admin.query("SELECT value FROM checkpoints WHERE name = ?", checkpoint)
        return rows[0][0] if rows else None

    # Listed at one object a second with a checkpoint after each, so the b/ half (listed
    # after a/'s 11 files) cannot have started when the first checkpoint is written.
    proc = admin.start(
        "scan",
        str(media),
        log="first.log",
        PICTGUARD_INGEST__BACKFILL__RATE_LIMIT="1",
        PICTGUARD_INGEST__CHECKPOINT_EVERY="1",
        PICTGUARD_INGEST__BATCH_SIZE="1",
    )
    after = wait_until(lambda: proc.poll() is None and saved(), "the first checkpoint")
    assert "/a/" in f"/{after}", after
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(COMMAND_TIMEOUT_S) == 130, admin.log("first.log")
    first = Result(["scan"], 130, admin.log("first.log"), "")
    table = first.table()
    assert table["status"].startswith("interrupted"), first
    kept = saved()
    assert kept is not None and kept >= after  # the checkpoint stays for the next run
    assert not kept.startswith("b/"), kept

    # The same command again: continues after the checkpoint and completes.
    second = admin.run("scan", str(media))
    assert second.returncode == 1, second  # b/ holds a copy of the blocklisted photo
    table = second.table()
    assert table["resumed"].startswith(f"after {kept}"), second
    assert int(table["scanned"]) < len(files)
    assert saved() is None  # a completed scan clears its checkpoint

    # Every file got a verdict, over the two runs; nothing was acted on twice.
    scanned = {row[0] for row in admin.query("SELECT DISTINCT object_id FROM verdicts")}
    assert scanned == {f"file://{p.resolve()}" for p in files}
    rows = admin.audit()
    assert acted_twice(rows) == []
    counts = outcomes(rows)
    quarantined = {
        obj for (obj, action, outcome) in counts if (action, outcome) == ("quarantine", "done")
    }
    assert quarantined == {
        f"file://{p.resolve()}" for p in (bad, second_half["photo-0800x0600.jpg"])
    }
    for half in (first_half, second_half):
        for name in BROKEN:
            assert counts[(f"file://{half[name].resolve()}", "report", "done")] == 1
