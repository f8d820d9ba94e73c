"""``pictguard serve`` as an admin runs it beside pict-rs, and with the folder watcher."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.journeys.helpers import (
    BROKEN,
    IMAGES,
    Admin,
    acted_twice,
    outcomes,
    port,
    upload,
    wait_ready,
    wait_until,
    write_media,
)
from tests.media import MediaItem

CLIENTS = json.dumps([{"id": "pictrs", "cidrs": ["127.0.0.0/8"]}])


def serving(tmp_path: Path, **settings: str) -> tuple[Admin, str]:
    api = port()
    admin = Admin.at(
        tmp_path,
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(api),
        PICTGUARD_API__CLIENTS=CLIENTS,
        **settings,
    )
    return admin, f"http://127.0.0.1:{api}"


def test_pictrs_uploads_are_answered_then_answered_from_the_cache(
    tmp_path: Path, journey_media: list[MediaItem]
) -> None:
    admin, url = serving(tmp_path)
    items = {item.name: item for item in journey_media}
    known_bad = tmp_path / "known-bad.jpg"
    known_bad.write_bytes(items["photo-0800x0600.jpg"].data)
    added = admin.run("hashes", "add", "--block", "--reason", "known bad (test)", str(known_bad))
    assert added.returncode == 0, added
    proc = admin.start("serve", log="serve.log")
    try:
        wait_ready(url, proc, lambda: admin.log("serve.log"))
        scan = f"{url}/api/v1/scan/pictrs"
        first = {name: upload(scan, item) for name, item in items.items()}
        again = {name: upload(scan, item) for name, item in items.items()}
    finally:
        admin.stop_all()

    for name in IMAGES:
        expected = 406 if name == "photo-0800x0600.jpg" else 200
        assert first[name].status_code == expected, (name, first[name].text)
        assert again[name].status_code == expected, (name, again[name].text)
        # The second time nothing is decoded or run through a model: hash list or cache.
        assert again[name].json()["path"] == "fast", (name, again[name].json())
    assert first["photo-0800x0600.jpg"].json()["decision"] == "flag_csam"
    for name in BROKEN:  # api.on_error: accept (the default) — pict-rs rejects them itself
        assert first[name].status_code == again[name].status_code == 200, first[name].text
        assert first[name].json()["decision"] == "error"
    assert proc.returncode == 0, admin.log("serve.log")


def test_the_folder_watcher_scans_dropped_files_and_acts_once(
    tmp_path: Path, journey_media: list[MediaItem]
) -> None:
    watched = tmp_path / "pictrs" / "files"
    watched.mkdir(parents=True)
    admin, url = serving(
        tmp_path,
        PICTGUARD_INGEST__WATCH__ENABLED="true",
        PICTGUARD_INGEST__WATCH__ROOTS=json.dumps([str(watched)]),
        PICTGUARD_INGEST__WATCH__SETTLE_S="0.5",
    )
    known_bad = tmp_path / "known-bad.jpg"
    known_bad.write_bytes(next(i for i in journey_media if i.name == "photo-0800x0600.jpg").data)
    added = admin.run("hashes", "add", "--block", "--reason", "known bad (test)", str(known_bad))
    assert added.returncode == 0, added
    proc = admin.start("serve", log="serve.log")
    try:
        wait_ready(url, proc, lambda: admin.log("serve.log"))  # ready: the watch is in place
        paths = write_media(watched / "2024" / "06", journey_media)
        ids = {f"file://{p.resolve()}" for p in paths.values()}

        def judged() -> bool:
            rows = admin.query("SELECT DISTINCT object_id FROM verdicts")
            return ids <= {row[0] for row in rows}

        wait_until(judged, "a verdict for every dropped file")
        # The actions follow their verdicts: wait for the quarantine and the 3 reports.
        wait_until(
            lambda: len(admin.query("SELECT 1 FROM actions WHERE outcome = 'done'")) >= 4,
            "the actions",
        )
    finally:
        admin.stop_all()
    assert proc.returncode == 0, admin.log("serve.log")

    bad = paths["photo-0800x0600.jpg"]
    assert not bad.exists()
    quarantine = tmp_path / "quarantine"
    assert any(p.read_bytes() == known_bad.read_bytes() for p in quarantine.rglob("*.jpg"))
    rows = admin.audit()
    assert acted_twice(rows) == []
    counts = outcomes(rows)
    assert counts[(f"file://{bad.resolve()}", "quarantine", "done")] == 1
    for name in BROKEN:
        assert counts[(f"file://{paths[name].resolve()}", "report", "done")] == 1
    for name in set(IMAGES) - {"photo-0800x0600.jpg"}:
        assert paths[name].exists()


def test_readyz_says_why_uploads_would_all_be_refused(tmp_path: Path) -> None:
    api = port()
    admin = Admin.at(
        tmp_path,
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(api),
        PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist",
    )
    url = f"http://127.0.0.1:{api}"
    proc = admin.start("serve", log="serve.log")
    try:

        def answered() -> httpx.Response | None:
            assert proc.poll() is None, admin.log("serve.log")
            try:
                return httpx.get(f"{url}/readyz", timeout=5)
            except httpx.HTTPError:
                return None

        ready = wait_until(answered, "/readyz")
        # Not ready, and the body says what to set: no silent 401 for every pict-rs call.
        assert ready.status_code == 503
        assert "PICTGUARD_API__CLIENTS" in ready.json()["message"]
        assert httpx.post(f"{url}/api/v1/scan/lemmy", content=b"x").status_code == 401
    finally:
        admin.stop_all()
    log = admin.log("serve.log")
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert any("PICTGUARD_API__CLIENTS=" in line and '"id": "lemmy"' in line for line in warnings)
