"""An admin scans an old pict-rs bucket with `pictguard scan`: a blocklisted image, uploaded
long ago, is quarantined, purged from pict-rs and reported on Lemmy with its uploader.

Run the way an admin would: the pictguard CLI as a subprocess, configured through the
environment, against FakePictrs (storing in a moto bucket) and FakeLemmy over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.enforce.platform.world import (
    ADMIN,
    ADMIN_PASSWORD,
    PICTRS_KEY,
    LemmyWorld,
    clean_images,
    seed_image,
)
from tests.fakes import FakePictrs
from tests.media import photo_jpeg
from tests.servers import S3Server

pytestmark = pytest.mark.timeout(300)
DAY_NS = 24 * 3600 * 10**9


def pictguard(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_scan_of_an_old_pictrs_bucket_purges_and_reports_with_the_uploader(
    tmp_path: Path,
    s3_server: S3Server,
    s3: Any,
    bucket: str,
    pictrs: FakePictrs,
    world: LemmyWorld,
) -> None:
    old = time.time_ns() - 400 * DAY_NS
    bad = seed_image(pictrs, photo_jpeg(71, 800, 600), aliases=2, thumbnail=True, created_ns=old)
    clean = clean_images(pictrs, 6)  # newer uploads: the old one is deep in the listing
    post, comment = world.uses(bad)
    lemmy = world.lemmy
    quarantine = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=quarantine)
    known_bad = tmp_path / "known-bad.jpg"
    known_bad.write_bytes(bad.data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_S3__ENDPOINT_URL=s3_server.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID=s3_server.access_key,
        PICTGUARD_S3__SECRET_ACCESS_KEY=s3_server.secret_key,
        PICTGUARD_STORAGE__STATE_DIR=str(tmp_path / "state"),
        PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist",
        PICTGUARD_ENFORCE__QUARANTINE=f"s3://{quarantine}/",
        PICTGUARD_ENFORCE__PLATFORM__PICTRS__URL=pictrs.url,
        PICTGUARD_ENFORCE__PLATFORM__PICTRS__API_KEY=PICTRS_KEY,
        PICTGUARD_ENFORCE__PLATFORM__PICTRS__LOCATIONS=json.dumps([f"s3://{bucket}"]),
        PICTGUARD_ENFORCE__PLATFORM__PICTRS__PAGE_SIZE="3",
        PICTGUARD_ENFORCE__PLATFORM__LEMMY__URL=lemmy.url,
        PICTGUARD_ENFORCE__PLATFORM__LEMMY__USERNAME=ADMIN,
        PICTGUARD_ENFORCE__PLATFORM__LEMMY__PASSWORD=ADMIN_PASSWORD,
        PICTGUARD_LOG__LEVEL="DEBUG",
    )

    added = pictguard(["hashes", "add", "--block", "--reason", "known bad", str(known_bad)], env)
    assert added.returncode == 0, added.stderr
    scan = pictguard(["--debug", "scan", f"s3://{bucket}", "--json"], env)
    assert scan.returncode == 1, scan.stderr  # something was flagged (as clamscan: 1)
    audit = pictguard(["audit", "--json"], env)
    assert audit.returncode == 0, audit.stderr

    # pict-rs: nothing of the image is left — no alias, no variant, no stored file.
    assert not set(bad.aliases) & set(pictrs.aliases())
    stored = pictrs.stored_identifiers()
    assert bad.identifier not in stored and not set(bad.variants) & stored
    assert {c.identifier for c in clean} <= stored
    quarantined = {o["Key"] for o in s3.list_objects_v2(Bucket=quarantine).get("Contents", [])}
    assert f"s3/{bucket}/{bad.identifier}" in quarantined  # keyed by its source bucket
    # Lemmy: the post and the comment that use it are reported by pictguard's admin account.
    assert {(r.kind, r.object_id) for r in lemmy.reports.values()} == {
        ("post", post),
        ("comment", comment),
    }
    assert all(r.creator_id == world.admin_id for r in lemmy.reports.values())

    rows = json.loads(audit.stdout)
    for_bad = [r for r in rows if r.get("sha256") == bad.sha256]
    by_action = {r["action"]: r for r in for_bad}
    assert by_action["quarantine"]["outcome"] == "done"
    assert by_action["purge"]["outcome"] == "done"
    assert sorted(by_action["purge"]["platform"]["aliases"]) == sorted(bad.aliases)
    moderate = by_action["moderate"]
    assert moderate["outcome"] == "done"
    assert moderate["platform"]["uploader"] == {
        "person_id": world.uploader_id,
        "name": "uploader",
    }
    assert moderate["platform"]["posts"] == [post]
    assert not [r for r in rows if r["outcome"] == "failed"]

    # Secrets never reach the output, debug logs of every request included.
    everything = added.stdout + added.stderr + scan.stdout + scan.stderr + audit.stdout
    assert "/internal/purge?alias=" in scan.stderr and "/api/v3/user/login" in scan.stderr
    for secret in (PICTRS_KEY, ADMIN_PASSWORD):
        assert secret not in everything
