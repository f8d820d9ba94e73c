"""Filter defaults for the storage layouts of pict-rs, Mastodon and Misskey.

A preset fills every filter list the admin left empty; a list the admin sets replaces the
preset's. Layouts (PROTOCOLS.md, "Storage layouts worth presets"):

- pict-rs: keys at the bucket root (ten two-hex-digit folders then a 12-hex name with an
  extension; older versions a bare UUID without one). Variants share the layout, so nothing
  can be told apart by prefix: every image is scanned.
- Mastodon: ``[cache/]<class>/<attachment>/<id partition>/<style>/<file>``; remote media
  lives under ``cache/``; ``backups/`` and ``imports/`` hold archives, never media.
- Misskey: ``<prefix>/<uuid>.<ext>`` plus ``webpublic-`` (re-encoded copy of the original)
  and ``thumbnail-`` variants; local storage names files without an extension.

Video is scanned (classify samples its frames; MP4, MOV, WebM and MKV, and any other video
gets an ``unsupported_type`` verdict an admin hears of rather than silence). Audio,
documents and archives are skipped: they hold no picture.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.settings import IngestSettings

# Types that hold no picture; extensionless and unknown names are still scanned.
NON_IMAGE_EXTENSIONS: tuple[str, ...] = (
    # audio
    ".mp3", ".ogg", ".oga", ".opus", ".wav", ".flac", ".m4a", ".aac",
    # documents and archives (Mastodon backups and imports, Misskey drive files)
    ".zip", ".gz", ".tgz", ".tar", ".7z", ".csv", ".json", ".txt", ".pdf", ".html",
)  # fmt: skip

MASTODON_LOCAL_PREFIXES: tuple[str, ...] = (
    "media_attachments/",
    "accounts/",
    "custom_emojis/",
    "preview_cards/",
    "site_uploads/",
)
MASTODON_REMOTE_PREFIX = "cache/"
MASTODON_SKIPPED_PREFIXES: tuple[str, ...] = ("backups/", "imports/")
MISSKEY_WEBPUBLIC = "webpublic-"


@dataclass(frozen=True)
class PresetRules:
    """Filter lists a preset supplies."""

    include_prefixes: tuple[str, ...] = ()
    exclude_prefixes: tuple[str, ...] = ()
    exclude_extensions: tuple[str, ...] = ()
    exclude_name_prefixes: tuple[str, ...] = ()


def preset_rules(settings: IngestSettings) -> PresetRules:
    """The rules of ``settings.preset`` (empty for ``none``)."""
    if settings.preset == "pictrs":
        return PresetRules(exclude_extensions=NON_IMAGE_EXTENSIONS)
    if settings.preset == "mastodon":
        include: tuple[str, ...] = ()
        exclude = MASTODON_SKIPPED_PREFIXES
        if settings.mastodon_media == "local":
            include = MASTODON_LOCAL_PREFIXES
        elif settings.mastodon_media == "remote":
            include = (MASTODON_REMOTE_PREFIX,)
        return PresetRules(
            include_prefixes=include,
            exclude_prefixes=exclude,
            exclude_extensions=NON_IMAGE_EXTENSIONS,
        )
    if settings.preset == "misskey":
        names = () if settings.misskey_webpublic else (MISSKEY_WEBPUBLIC,)
        return PresetRules(exclude_extensions=NON_IMAGE_EXTENSIONS, exclude_name_prefixes=names)
    return PresetRules()
