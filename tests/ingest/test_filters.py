"""Filters and the pict-rs, Mastodon and Misskey presets."""

from __future__ import annotations

import pytest

from ingest.filters import KeyFilter, layout_path
from ingest.presets import mastodon_kind
from ingest.settings import IngestSettings
from pipeline.events import StoreKind


def f(**kw: object) -> KeyFilter:
    return KeyFilter.from_settings(IngestSettings(**kw))  # type: ignore[arg-type]


def test_no_rules_admit_everything() -> None:
    assert f().rejection("anything/at/all.bin", size=10**12, content_type="x/y") is None


def test_prefixes_extensions_names() -> None:
    rules = f(
        include_prefixes=["media/"],
        exclude_prefixes=["media/tmp/"],
        extensions=["jpg", ".PNG"],
        exclude_name_prefixes=["thumb-"],
    )
    assert rules.admits("media/a.jpg")
    assert rules.admits("media/A.PNG")
    assert not rules.admits("other/a.jpg")
    assert not rules.admits("media/tmp/a.jpg")
    assert not rules.admits("media/a.gif")
    assert not rules.admits("media/thumb-a.jpg")


def test_size_cap_and_content_types() -> None:
    rules = f(max_size_bytes=1000, content_types=["image/"], exclude_content_types=["image/svg"])
    assert rules.rejection("a", size=1000) is None
    assert rules.rejection("a", size=1001) == "larger than ingest.max_size_bytes"
    assert rules.rejection("a", size=None) is None  # unknown size: classify caps the download
    assert rules.rejection("a", content_type="image/jpeg; charset=binary") is None
    assert rules.rejection("a", content_type="video/mp4") == "content type not included"
    assert rules.rejection("a", content_type="image/svg+xml") == "excluded content type"
    assert rules.rejection("a", content_type=None) is None  # only MinIO events carry the type


PICTRS_NEW = "1f/2e/3d/4c/5b/6a/79/88/97/a6/0123456789ab.webp"
PICTRS_OLD = "1f/2e/3d/4c/5b/6a/79/88/97/a6/4b6a7c38-2d6e-4c1e-9c1a-0f1e2d3c4b5a"


def test_pictrs_preset_scans_every_image_and_video_including_extensionless_keys() -> None:
    rules = f(preset="pictrs")
    assert rules.admits(PICTRS_NEW)
    assert rules.admits(PICTRS_OLD)
    assert rules.admits("1f/2e/3d/4c/5b/6a/79/88/97/a6/0123456789ab.jpg")
    # pict-rs keeps uploaded video (and, unless configured otherwise, GIFs as GIFs).
    assert rules.admits("1f/2e/3d/4c/5b/6a/79/88/97/a6/0123456789ab.mp4")
    assert rules.admits("1f/2e/3d/4c/5b/6a/79/88/97/a6/0123456789ab.webm")
    assert not rules.admits("1f/2e/3d/4c/5b/6a/79/88/97/a6/0123456789ab.mp3")


LOCAL = "media_attachments/files/110/123/456/789/012/345/original/3c2b1a.png"
REMOTE = "cache/media_attachments/files/110/123/456/789/012/345/original/9f8e7d.jpg"
AVATAR = "accounts/avatars/000/000/001/original/5a4b3c.jpeg"
BACKUP = "backups/dumps/000/000/001/original/archive-20240501.tar.gz"
IMPORT = "imports/data/000/000/001/original/following.csv"
VIDEO = "media_attachments/files/110/123/456/789/012/345/original/clip.mp4"
VIDEO_THUMB = "media_attachments/files/110/123/456/789/012/345/small/clip.png"
AUDIO = "media_attachments/files/110/123/456/789/012/345/original/voice.mp3"


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        ("all", {LOCAL, REMOTE, AVATAR, VIDEO, VIDEO_THUMB}),
        ("local", {LOCAL, AVATAR, VIDEO, VIDEO_THUMB}),
        ("remote", {REMOTE}),
    ],
)
def test_mastodon_preset(media: str, expected: set[str]) -> None:
    rules = f(preset="mastodon", mastodon_media=media)
    keys = {LOCAL, REMOTE, AVATAR, BACKUP, IMPORT, VIDEO, VIDEO_THUMB, AUDIO}
    assert {k for k in keys if rules.admits(k)} == expected


def test_misskey_preset_skips_webpublic_copies_unless_asked() -> None:
    keys = {
        "files/6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.jpg",
        "files/webpublic-6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.webp",
        "files/thumbnail-6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.webp",
        "files/0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",  # local storage: no extension
        "files/0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5e.mp4",
    }
    default = f(preset="misskey")
    assert {k for k in keys if default.admits(k)} == {
        "files/6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.jpg",
        "files/thumbnail-6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.webp",
        "files/0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
        "files/0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5e.mp4",
    }
    assert f(preset="misskey", misskey_webpublic=True).admits(
        "files/webpublic-6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0.webp"
    )


def test_admin_lists_replace_the_presets() -> None:
    rules = f(preset="mastodon", exclude_extensions=[".zip"])
    assert rules.admits(AUDIO)  # the admin's exclude list replaced the preset's
    assert not rules.admits(BACKUP)  # the preset's prefixes still apply


# Where a store's files lie: Mastodon's public/system, under folders whose names must not
# count (a restored copy under backups/, a home under accounts/).
SYSTEM = "/home/accounts/backups/mastodon/public/system"


@pytest.mark.parametrize(
    ("root", "key", "kind"),
    [
        (SYSTEM, LOCAL, "local"),
        (SYSTEM, REMOTE, "remote"),
        (SYSTEM, AVATAR, "local"),
        (SYSTEM, BACKUP, "archive"),
        (f"{SYSTEM}/cache", LOCAL, "remote"),  # a scan or watcher started inside cache/
        (f"{SYSTEM}/cache/media_attachments", LOCAL.removeprefix("media_attachments/"), "remote"),
        (f"{SYSTEM}/cache/accounts/avatars", "000/000/001/original/5a4b3c.jpeg", "remote"),
        (f"{SYSTEM}/media_attachments", LOCAL.removeprefix("media_attachments/"), "local"),
        (f"{SYSTEM}/accounts", AVATAR.removeprefix("accounts/"), "local"),
        (f"{SYSTEM}/imports", IMPORT.removeprefix("imports/"), "archive"),
        (SYSTEM, "robots.txt", None),
        (SYSTEM, "media_attachments/stray.png", None),  # not Mastodon's layout below
        (SYSTEM, "cache/backup-of-avatar.png", None),
        ("/srv/elsewhere", "photos/cat.jpg", None),
    ],
)
def test_mastodon_layout_is_judged_on_the_files_whole_location(
    root: str, key: str, kind: str | None
) -> None:
    assert mastodon_kind(layout_path(key, StoreKind.FILE, root)) == kind
    local, remote = (
        f(preset="mastodon", mastodon_media="local"),
        f(preset="mastodon", mastodon_media="remote"),
    )
    assert local.admits(key, store=StoreKind.FILE, root=root) is (kind == "local")
    assert remote.admits(key, store=StoreKind.FILE, root=root) is (kind == "remote")


@pytest.mark.parametrize("prefix", ["", "mastodon/", "shared/social/"])
def test_mastodon_bucket_keys_are_judged_from_the_bucket_root(prefix: str) -> None:
    local = f(preset="mastodon", mastodon_media="local")
    remote = f(preset="mastodon", mastodon_media="remote")
    # The bucket's name is not part of the layout (a bucket named "cache" holds local media).
    for bucket in ("mastodon-media", "cache"):
        s3 = StoreKind.S3
        assert local.admits(prefix + LOCAL, store=s3, root=bucket)
        assert not local.admits(prefix + REMOTE, store=s3, root=bucket)
        assert remote.admits(prefix + REMOTE, store=s3, root=bucket)
        assert not remote.admits(prefix + LOCAL, store=s3, root=bucket)
        assert not remote.admits(prefix + BACKUP, store=s3, root=bucket)


def test_mastodon_skips_say_why() -> None:
    local = f(preset="mastodon", mastodon_media="local")
    remote = f(preset="mastodon", mastodon_media="remote")
    assert local.rejection(REMOTE) == "remote media (mastodon_media=local)"
    assert remote.rejection(LOCAL) == "local media (mastodon_media=remote)"
    assert local.rejection("cat.jpg") == "outside Mastodon's media folders (mastodon_media=local)"
    assert f(preset="mastodon").rejection(BACKUP) == "Mastodon backups and imports"
    assert f(preset="mastodon").rejection(AUDIO) == "excluded extension"


def test_admin_prefixes_apply_on_top_of_mastodon_media() -> None:
    # The Mastodon rule is no list: prefixes the admin sets narrow it, never undo it.
    rules = f(preset="mastodon", mastodon_media="local", include_prefixes=["cache/", "accounts/"])
    assert rules.admits(AVATAR)
    assert not rules.admits(REMOTE)
    assert not rules.admits(LOCAL)
