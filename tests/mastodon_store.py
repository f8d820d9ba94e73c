"""A Mastodon media store as Mastodon (Paperclip) lays it out, generated for the tests.

``public/system/[cache/]<class>/<attachment>/<id partition>/<style>/<file>``: local uploads
under the class folders, remote media under ``cache/``, account exports and imports under
``backups/`` and ``imports/``. The same keys serve a bucket (Mastodon's S3 keys start at
``[cache/]<class>/…``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.media import non_image, photo_jpeg, png_photo, screenshot_png, webp_image

# Keys relative to ``public/system`` (or the bucket root) and how to make their bytes.
_LOCAL: dict[str, Callable[[], bytes]] = {
    "media_attachments/files/110/123/456/789/012/345/original/3c2b1a9f8e7d6c5b.jpg": (
        lambda: photo_jpeg(3, 1280, 960)
    ),
    # Its small style: a resized copy.
    "media_attachments/files/110/123/456/789/012/345/small/3c2b1a9f8e7d6c5b.jpg": (
        lambda: photo_jpeg(3, 400, 300)
    ),
    "accounts/avatars/000/000/001/original/5a4b3c2d1e0f9a8b.png": lambda: png_photo(1, 96, 96),
    "custom_emojis/images/000/000/002/original/blobcat.png": lambda: screenshot_png(2, 128, 128),
    "site_uploads/files/000/000/001/original/thumbnail.webp": lambda: webp_image(4, 640, 360),
}
_REMOTE: dict[str, Callable[[], bytes]] = {
    "cache/media_attachments/files/111/222/333/444/555/666/original/9f8e7d6c5b4a3f2e.webp": (
        lambda: webp_image(6, 800, 600)
    ),
    "cache/accounts/avatars/000/000/009/original/7e6d5c4b3a2f1e0d.jpg": (
        lambda: photo_jpeg(5, 400, 400)
    ),
    "cache/preview_cards/images/000/000/003/original/a1b2c3d4e5f6a7b8.jpg": (
        lambda: photo_jpeg(7, 400, 210)
    ),
}
# What no Mastodon preset scans: archives, and audio among the local attachments.
_OTHER: dict[str, Callable[[], bytes]] = {
    "backups/dumps/000/000/001/original/archive-20240501120000-0a1b2c3d4e5f.zip": (
        lambda: b"PK\x05\x06" + bytes(18)  # an empty zip archive
    ),
    "imports/data/000/000/001/original/following_accounts.csv": (
        lambda: b"Account address,Show boosts\nalice@example.org,true\n"
    ),
    # Never read: its extension keeps it out.
    "media_attachments/files/110/123/456/789/012/346/original/voice.mp3": (
        lambda: non_image("txt", 8)
    ),
}
LOCAL = frozenset(_LOCAL)
REMOTE = frozenset(_REMOTE)
ARCHIVES = frozenset(k for k in _OTHER if k.startswith(("backups/", "imports/")))
AUDIO = next(k for k in _OTHER if k.endswith(".mp3"))


def tree_objects() -> dict[str, bytes]:
    """The store as keys (relative to ``public/system``, or bucket keys) and their bytes."""
    return {key: make() for key, make in {**_LOCAL, **_REMOTE, **_OTHER}.items()}


def write_tree(system: Path) -> dict[str, Path]:
    """Write the store under ``system`` (``public/system``); paths by key."""
    paths = {}
    for key, data in tree_objects().items():
        path = system / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[key] = path
    return paths
