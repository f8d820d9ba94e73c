"""`pictguard evidence export`: a package for a report, mapped to CyberTipline's fields."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from enforce.evidence import EvidenceExporter
from enforce.review.journal import Journal, Mark
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from tests.enforce.review.scenario import Scenario, build
from tests.media import pdq_distance, pdq_hash


@pytest.fixture
async def scenario(tmp_path: Path) -> Scenario:
    return await build(tmp_path / "box", listed=2, clean=1)


def export(scenario: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(scenario.config_file), "evidence",
         "export", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


async def items(scenario: Scenario) -> dict[str, Any]:
    """Review items by image name."""
    state = SqliteState(scenario.settings.storage.state_file)
    await state.start()
    stores = Stores(scenario.settings.s3)
    try:
        exporter = EvidenceExporter(state, stores)
        found = await exporter.resolve(
            [
                scenario.sha256(name)
                for name in scenario.images
                if name.startswith(("listed", "sun", "up"))
            ]
        )
    finally:
        await stores.close()
        await state.stop()
    by_name = {}
    for item in found:
        name = next(n for n in scenario.images if scenario.sha256(n) == item.sha256)
        by_name[name] = item
    return by_name


def package_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_package_without_the_file_maps_hashes_source_verdict_and_audit(
    scenario: Scenario, tmp_path: Path
) -> None:
    name = sorted(n for n in scenario.listed if n != scenario.upload)[0]
    data = scenario.images[name]
    item = (await items(scenario))[name]
    out = tmp_path / "out"
    done = export(scenario, item.item_id, "--out", str(out), "--by", "erin", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    package = Path(result["path"])
    assert package.parent == out and result["items"] == [item.item_id]
    assert oct(package.stat().st_mode & 0o777) == oct(0o700)
    files = package_files(package)
    folder = f"item-{item.item_id}"
    assert not any("/file/" in path for path in files)  # no file without --include-file
    report = json.loads(files[f"{folder}/report.json"])
    assert report["hashes"]["md5"] == hashlib.md5(data).hexdigest()
    assert report["hashes"]["sha1"] == hashlib.sha1(data).hexdigest()
    assert report["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert pdq_distance(report["hashes"]["pdq"]["value"], pdq_hash(data)[0]) <= 16
    tip = report["cybertipline"]
    assert tip["incidentSummary"]["incidentType"].startswith("Child Pornography")
    details = tip["fileDetails"]
    assert {h["hashType"] for h in details["originalFileHash"]} == {"MD5", "SHA1", "SHA256"}
    assert details["details"][0]["name"] == "PDQ"
    assert details["originalFileName"] == name and details["fileViewedByEsp"] is False
    assert report["source"]["object"] == f"file://{scenario.media}/{name}"
    assert report["item"]["hash_list_match"] is True
    assert "sends nothing" in report["notice"]
    audit = json.loads(files[f"{folder}/audit.json"])
    assert [a["action"] for a in audit["actions"]] == ["quarantine"]
    verdict = json.loads(files[f"{folder}/verdict.json"])
    assert verdict["matched"].startswith("blocklist")
    manifest = files["MANIFEST.sha256"].decode().splitlines()
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in manifest}
    for path, body in files.items():
        if path != "MANIFEST.sha256":
            assert listed[path] == hashlib.sha256(body).hexdigest()
    state = SqliteState(scenario.settings.storage.state_file)
    await state.start()
    try:
        rows = await Journal(state).audit(item_id=item.item_id)
    finally:
        await state.stop()
    assert [(r.reviewer, r.event, r.detail["include_file"]) for r in rows] == [
        ("erin", "export", False)
    ]


async def test_the_file_goes_in_only_when_asked_and_a_zip_holds_the_same(
    scenario: Scenario, tmp_path: Path
) -> None:
    item = (await items(scenario))[scenario.upload]
    done = export(scenario, item.item_id, "--out", str(tmp_path), "--include-file", "--zip")
    assert done.returncode == 0, done.stderr
    [archive] = list(tmp_path.glob("pictguard-evidence-*.zip"))
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        [file_name] = [n for n in names if "/file/" in n]
        assert z.read(file_name) == scenario.images[scenario.upload]
        report = json.loads(z.read(next(n for n in names if n.endswith("report.json"))))
    assert report["source"]["upload_client"] == "pictrs"
    assert report["cybertipline"]["fileDetails"]["publiclyAvailable"] is False
    assert report["source"]["kept_copy"].startswith(f"file://{scenario.quarantine}/uploads/")
    assert "with the files" in done.stdout


async def test_a_model_only_verdict_needs_a_reviewer_before_export(
    scenario: Scenario, tmp_path: Path
) -> None:
    item = (await items(scenario))[scenario.model_only]
    refused = export(scenario, item.item_id, "--out", str(tmp_path))
    assert refused.returncode == 1
    assert "confirm it in the review console" in refused.stderr
    assert not list(tmp_path.glob("pictguard-evidence-*"))

    state = SqliteState(scenario.settings.storage.state_file)
    await state.start()
    try:
        journal = Journal(state)
        await journal.start()
        await journal.mark(
            item.item_id, Mark.CONFIRMED, "ana", "checked", verdict_id=item.verdict_id
        )
    finally:
        await state.stop()
    done = export(scenario, item.verdict_id, "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    package = Path(json.loads(done.stdout)["path"])
    report = json.loads((package / f"item-{item.item_id}" / "report.json").read_text())
    assert report["human_review"]["confirmed"] is True
    assert report["human_review"]["reviewer"] == "ana"
    assert report["item"]["model_only"] is True


async def test_unknown_targets_are_named(scenario: Scenario, tmp_path: Path) -> None:
    done = export(scenario, "0" * 64, "--out", str(tmp_path))
    assert done.returncode == 1 and "nothing flagged matches" in done.stderr


async def test_the_uploader_the_platform_found_goes_into_the_report(
    scenario: Scenario, tmp_path: Path
) -> None:
    """What the Lemmy integration recorded in its `moderate` action (the uploader, the
    posts) becomes the reported person and the web-page incident."""
    from enforce.enforcer import Enforcer
    from pipeline.bus.memory import MemoryBus
    from pipeline.events import ActionOutcome, ActionType, EnforcementAction

    name = sorted(n for n in scenario.listed if n != scenario.upload)[0]
    item = (await items(scenario))[name]
    site = "https://lemmy.example.org"
    state = SqliteState(scenario.settings.storage.state_file)
    await state.start()
    stores = Stores(scenario.settings.s3)
    try:
        enforcer = Enforcer(MemoryBus(), scenario.settings, stores, state)
        await enforcer.records.start()
        assert item.verdict is not None
        await enforcer.record(
            item.verdict,
            EnforcementAction(
                verdict_id=item.verdict_id,
                object=item.action.object,
                decision=item.action.decision,
                action=ActionType.MODERATE,
                outcome=ActionOutcome.DONE,
                platform={
                    "system": "lemmy",
                    "phase": "flag",
                    "uploader": {"person_id": 12, "name": "spammer"},
                    "posts": [34],
                    "comments": [],
                    "steps": [{"step": "report", "outcome": "done", "target": "post 34"}],
                    "links": [f"{site}/u/spammer", f"{site}/post/34", f"{site}/reports"],
                },
            ),
        )
    finally:
        await stores.close()
        await state.stop()
    item = (await items(scenario))[name]
    assert item.uploader == "spammer (lemmy)" and item.uploader_id == "12"
    done = export(scenario, item.item_id, "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    package = Path(json.loads(done.stdout)["path"])
    report = json.loads((package / f"item-{item.item_id}" / "report.json").read_text())
    person = report["cybertipline"]["personOrUserReported"]
    assert person["espIdentifier"] == "12" and person["screenName"] == "spammer (lemmy)"
    assert person["profileUrl"] == [f"{site}/u/spammer"]
    assert report["cybertipline"]["internetDetails"] == [
        {"webPageIncident": {"url": [f"{site}/post/34"]}}
    ]
