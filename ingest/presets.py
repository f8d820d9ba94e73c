"""Filter defaults for the storage layouts of pict-rs, Mastodon and Misskey.

A preset fills every filter list the admin left empty; a list the admin sets replaces the
preset's. The Mastodon preset's rule (``ingest.mastodon_media``, archives) is not a list: it
applies on top of the admin's prefixes.

Layouts (PROTOCOLS.md, "Storage layouts worth presets"):

- pict-rs: keys at the bucket root (ten two-hex-digit folders then a 12-hex name with an
  extension; older versions a bare UUID without one). Variants share the layout, so nothing
  can be told apart by prefix: every image is scanned.
- Mastodon: ``[cache/]<class>/<attachment>/<id partition>/<style>/<file>``; remote media
  lives under ``cache/``; ``backups/`` and ``imports/`` hold archives, never media. Local
  and remote are told apart by the object's whole location (see :class:`MastodonLayout`),
  not by a prefix of its key: a key is relative to wherever a scan or watcher starts.
- Misskey: ``<prefix>/<uuid>.<ext>`` plus ``webpublic-`` (re-encoded copy of the original)
  and ``thumbnail-`` variants; local storage names files without an extension.

Video is scanned (classify samples its frames; MP4, MOV, WebM and MKV, and any other video
gets an ``unsupported_type`` verdict an admin hears of rather than silence). Audio,
documents and archives are skipped: they hold no picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingest.settings import IngestSettings

# Types that hold no picture; extensionless and unknown names are still scanned.
NON_IMAGE_EXTENSIONS: tuple[str, ...] = (
    # audio
    ".mp3", ".ogg", ".oga", ".opus", ".wav", ".flac", ".m4a", ".aac",
    # documents and archives (Mastodon backups and imports, Misskey drive files)
    ".zip", ".gz", ".tgz", ".tar", ".7z", ".csv", ".json", ".txt", ".pdf", ".html",
)  # fmt: skip

# The folders Mastodon (Paperclip) stores attachments in, one per model class.
MASTODON_CLASSES: frozenset[str] = frozenset(
    {"media_attachments", "accounts", "custom_emojis", "preview_cards", "site_uploads"}
)
# Remote media: the same class folders under this one.
MASTODON_CACHE = "cache"
# Account exports and imports: archives and CSV files, never media.
MASTODON_ARCHIVES: frozenset[str] = frozenset({"backups", "imports"})
MISSKEY_WEBPUBLIC = "webpublic-"

MastodonMedia = Literal["all", "local", "remote"]
MastodonKind = Literal["local", "remote", "archive"]


def mastodon_kind(path: str) -> MastodonKind | None:
    """What ``path`` holds in Mastodon's layout; None when it is outside the media folders.

    ``path`` is the object's whole location: a file's folder joined with its key, or a
    bucket key (which starts wherever Mastodon's ``S3_`` settings put it). The class folder
    (:data:`MASTODON_CLASSES`, or an archive folder) is the one followed by the rest of the
    layout, ``<attachment>/<id partition: digit groups>/<style>/<file>``: folders above the
    store may have such names too (``/home/accounts/…``, ``/mnt/backups/…``), and only the
    layout below tells them apart. Remote media has ``cache`` right above its class folder.
    """
    parts = path.split("/")
    # The deepest candidate first: nothing below a class folder carries a class name.
    for i in range(len(parts) - 5, -1, -1):
        name = parts[i]
        if name not in MASTODON_CLASSES and name not in MASTODON_ARCHIVES:
            continue
        attachment, partition, style = parts[i + 1], parts[i + 2 : -2], parts[-2]
        digits = all(p.isascii() and p.isdigit() for p in partition)
        if not (attachment and style and digits):
            continue
        if name in MASTODON_ARCHIVES:
            return "archive"
        return "remote" if i > 0 and parts[i - 1] == MASTODON_CACHE else "local"
    return None


@dataclass(frozen=True)
class MastodonLayout:
    """The Mastodon preset's path rule: archives always skipped, media by ``media``."""

    media: MastodonMedia = "all"

    def rejection(self, path: str) -> str | None:
        """Why the object at ``path`` (its whole location) is skipped, or None."""
        kind = mastodon_kind(path)
        if kind == "archive":
            return "Mastodon backups and imports"
        if self.media == "all" or kind == self.media:
            return None
        if kind is None:
            return f"outside Mastodon's media folders (mastodon_media={self.media})"
        return f"{kind} media (mastodon_media={self.media})"


@dataclass(frozen=True)
class PresetRules:
    """Filter lists a preset supplies, and the Mastodon preset's path rule."""

    exclude_extensions: tuple[str, ...] = ()
    exclude_name_prefixes: tuple[str, ...] = ()
    mastodon: MastodonLayout | None = None


def preset_rules(settings: IngestSettings) -> PresetRules:
    """The rules of ``settings.preset`` (empty for ``none``)."""
    if settings.preset == "pictrs":
        return PresetRules(exclude_extensions=NON_IMAGE_EXTENSIONS)
    if settings.preset == "mastodon":
        return PresetRules(
            exclude_extensions=NON_IMAGE_EXTENSIONS,
            mastodon=MastodonLayout(settings.mastodon_media),
        )
    if settings.preset == "misskey":
        names = () if settings.misskey_webpublic else (MISSKEY_WEBPUBLIC,)
        return PresetRules(exclude_extensions=NON_IMAGE_EXTENSIONS, exclude_name_prefixes=names)
    return PresetRules()
