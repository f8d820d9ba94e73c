"""An admin scans a Mastodon store with ``ingest.preset: mastodon`` from wherever suits them.

Local uploads and remote media (under ``cache/``) are told apart by where an object lies in
Mastodon's layout, whichever folder or prefix the scan starts at: ``public/system``,
``public/system/cache``, ``public/system/cache/media_attachments``, a bucket, or a prefix
inside a bucket. The summary says how many objects the filters skipped and why; a scan the
filters leave nothing to do says so and exits with 2.

Every image of the store is on the blocklist, so the flagged items of a ``--dry-run`` scan
are exactly the objects it scanned.
"""

from __future__ import annotations

import uuid
from collections.abc import Set
from pathlib import Path
from typing import Any

import pytest

from tests.journeys.helpers import Admin, Result
from tests.mastodon_store import LOCAL, REMOTE, tree_objects, write_tree
from tests.servers import S3Server

pytestmark = pytest.mark.timeout(600)

ARCHIVE_REASON = "Mastodon backups and imports"
TO_LOCAL = "remote media (mastodon_media=local)"
TO_REMOTE = "local media (mastodon_media=remote)"
EXTENSION = "excluded extension"


def mastodon_admin(home: Path, media: str, **settings: str) -> Admin:
    return Admin.at(
        home,
        PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist",
        PICTGUARD_INGEST__PRESET="mastodon",
        PICTGUARD_INGEST__MASTODON_MEDIA=media,
        **settings,
    )


def blocklist_everything(home: Path, system: Path) -> None:
    """Blocklist every image of the store (through the CLI, as an admin does)."""
    admin = mastodon_admin(home, "all")
    images = [str(system / key) for key in sorted(LOCAL | REMOTE)]
    added = admin.run("hashes", "add", "--block", "--reason", "test: every image", *images)
    assert added.returncode == 0, added


def scanned(result: Result, base: str) -> Set[str]:
    """The keys (relative to ``base``) a ``--dry-run --json`` scan scanned."""
    summary: dict[str, Any] = result.json()
    ids = {item["object"] for item in summary["items"]}
    assert all(i.startswith(base) for i in ids), (ids, base)
    assert len(ids) == summary["scanned"], result
    return {i.removeprefix(base) for i in ids}


def check_scan(
    admin: Admin, target: str, base: str, want: Set[str], skipped: dict[str, int]
) -> None:
    result = admin.run("scan", "--dry-run", "--json", target)
    assert result.returncode == (1 if want else 2), result
    summary = result.json()
    assert scanned(result, base) == want, result
    assert summary["skipped_by"] == skipped, result
    assert summary["skipped"] == sum(skipped.values())
    assert summary["listed"] == len(want) + sum(skipped.values())
    assert summary["nothing_scanned"] is (not want)


def test_local_and_remote_media_are_told_apart_wherever_the_scan_starts(
    tmp_path: Path,
) -> None:
    # A restored copy under a folder named backups/: only the store's own layout counts.
    system = (tmp_path / "backups" / "mastodon" / "public" / "system").resolve()
    write_tree(system)
    blocklist_everything(tmp_path, system)
    root = f"file://{system}/"
    cache_media = {k for k in REMOTE if k.startswith("cache/media_attachments/")}
    local_media = {k for k in LOCAL if k.startswith("media_attachments/")}

    cases: list[tuple[str, str, Set[str], dict[str, int]]] = [
        ("all", "", LOCAL | REMOTE, {ARCHIVE_REASON: 2, EXTENSION: 1}),
        ("local", "", LOCAL, {TO_LOCAL: len(REMOTE), ARCHIVE_REASON: 2, EXTENSION: 1}),
        # The audio file is local media: that is why it is skipped here.
        ("remote", "", REMOTE, {TO_REMOTE: len(LOCAL) + 1, ARCHIVE_REASON: 2}),
        # Started inside cache/: still remote media (the scan found nothing here before).
        ("remote", "cache/", REMOTE, {}),
        ("all", "cache/", REMOTE, {}),
        ("remote", "cache/media_attachments/", cache_media, {}),
        ("local", "media_attachments/", local_media, {EXTENSION: 1}),
    ]
    for media, start, want, skipped in cases:
        admin = mastodon_admin(tmp_path, media)
        base = root + start
        check_scan(admin, str(system / start), base, {k.removeprefix(start) for k in want}, skipped)


def test_a_scan_the_filters_leave_nothing_to_do_says_so_and_exits_2(tmp_path: Path) -> None:
    # ``local`` from inside cache/: remote media, all of it (it was scanned as local before).
    system = (tmp_path / "mastodon" / "public" / "system").resolve()
    write_tree(system)
    admin = mastodon_admin(tmp_path, "local")
    result = admin.run("scan", "--dry-run", str(system / "cache"), COLUMNS="200")
    assert result.returncode == 2, result
    table = result.table()
    assert table["scanned"] == "0"
    assert table["skipped by filters"] == f"3 of 3 listed: {TO_LOCAL} 3", result
    assert result.error_lines() == [
        f"error: nothing was scanned: the filters skipped all 3 objects listed under "
        f"{system / 'cache'} ({TO_LOCAL} 3). Check ingest.preset, ingest.mastodon_media and "
        "the other ingest filters, or scan another folder or prefix."
    ], result

    # The same store, all media: the summary counts what it skipped and why.
    everything = mastodon_admin(tmp_path, "all").run(
        "scan", "--dry-run", str(system), COLUMNS="200"
    )
    assert everything.returncode == 0, everything
    assert everything.table()["skipped by filters"] == (
        f"3 of 11 listed: {ARCHIVE_REASON} 2, {EXTENSION} 1"
    ), everything
    assert not everything.error_lines(), everything


def test_bucket_keys_under_a_prefix_are_told_apart_too(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    client: Any = s3_server.client()
    system = (tmp_path / "system").resolve()
    write_tree(system)  # for the blocklist: the same bytes as the bucket's
    blocklist_everything(tmp_path, system)
    prefix = f"social-{uuid.uuid4().hex[:6]}/"  # a bucket shared with other services
    for key, data in tree_objects().items():
        client.put_object(Bucket=bucket, Key=prefix + key, Body=data)
    s3 = {
        "PICTGUARD_S3__ENDPOINT_URL": s3_server.endpoint,
        "PICTGUARD_S3__ACCESS_KEY_ID": s3_server.access_key,
        "PICTGUARD_S3__SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    where = f"s3://{bucket}/{prefix}"
    local = mastodon_admin(tmp_path, "local", **s3)
    check_scan(local, where, where, LOCAL, {TO_LOCAL: 3, ARCHIVE_REASON: 2, EXTENSION: 1})
    remote = mastodon_admin(tmp_path, "remote", **s3)
    check_scan(remote, where + "cache/", where, REMOTE, {})
