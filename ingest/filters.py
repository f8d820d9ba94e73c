"""Which objects become scan requests: prefixes, extensions, names, content types, size.

One :class:`KeyFilter` serves every source (backfill, events, watcher, reconcile). Keys are
judged by their path; size and content type only where the source knows them (listings and
most events know the size; only MinIO events carry the content type).

The admin's prefixes match the key: relative to the bucket, or to the folder being scanned,
watched or reconciled. The Mastodon preset's rule judges the object's whole location
instead (the folder joined with the key, or the bucket key), so local and remote media are
told apart the same way wherever a scan starts; callers pass ``store`` and ``root`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.presets import MastodonLayout, preset_rules
from ingest.settings import IngestSettings
from pipeline.events import StoreKind


def _norm_ext(ext: str) -> str:
    ext = ext.lower().strip()
    return ext if ext.startswith(".") else f".{ext}"


def _norm_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def layout_path(key: str, store: StoreKind | None = None, root: str = "") -> str:
    """The object's whole location in its store's layout: a file's folder joined with its
    key; a bucket key as it is (it already starts at the bucket's root)."""
    if store is StoreKind.FILE and root:
        return f"{root.rstrip('/')}/{key}"
    return key


@dataclass(frozen=True)
class KeyFilter:
    """Include/exclude rules; an empty include list admits everything.

    ``mastodon`` is the Mastodon preset's rule; it applies on top of the admin's prefixes.
    """

    include_prefixes: tuple[str, ...] = ()
    exclude_prefixes: tuple[str, ...] = ()
    extensions: frozenset[str] = field(default_factory=frozenset)
    exclude_extensions: frozenset[str] = field(default_factory=frozenset)
    exclude_name_prefixes: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    exclude_content_types: tuple[str, ...] = ()
    max_size_bytes: int | None = None
    mastodon: MastodonLayout | None = None

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> KeyFilter:
        """The admin's rules, with the preset filling each list left empty."""
        preset = preset_rules(settings)
        return cls(
            include_prefixes=tuple(settings.include_prefixes),
            exclude_prefixes=tuple(settings.exclude_prefixes),
            extensions=frozenset(_norm_ext(e) for e in settings.extensions),
            exclude_extensions=frozenset(
                _norm_ext(e) for e in (settings.exclude_extensions or preset.exclude_extensions)
            ),
            exclude_name_prefixes=tuple(
                settings.exclude_name_prefixes or preset.exclude_name_prefixes
            ),
            content_types=tuple(_norm_type(t) for t in settings.content_types),
            exclude_content_types=tuple(_norm_type(t) for t in settings.exclude_content_types),
            max_size_bytes=settings.max_size_bytes,
            mastodon=preset.mastodon,
        )

    def admits(self, key: str, *, store: StoreKind | None = None, root: str = "") -> bool:
        """Whether ``key`` passes the path rules (prefixes, layout, names, extensions)."""
        return self.key_rejection(key, store=store, root=root) is None

    def key_rejection(
        self, key: str, *, store: StoreKind | None = None, root: str = ""
    ) -> str | None:
        """Why the path rules skip ``key``, or None if they admit it.

        ``store`` and ``root`` say where the key lives (the store's kind and its bucket or
        folder): the Mastodon rule needs a file's folder to see where in the layout it is.
        """
        if self.include_prefixes and not key.startswith(self.include_prefixes):
            return "outside the included prefixes"
        if self.exclude_prefixes and key.startswith(self.exclude_prefixes):
            return "under an excluded prefix"
        if self.mastodon is not None:
            reason = self.mastodon.rejection(layout_path(key, store, root))
            if reason is not None:
                return reason
        name = key.rsplit("/", 1)[-1].lower()
        if self.exclude_name_prefixes and name.startswith(self.exclude_name_prefixes):
            return "excluded file name"
        ext = name[name.rfind(".") :] if "." in name else ""
        if self.extensions and ext not in self.extensions:
            return "extension not included"
        if self.exclude_extensions and ext in self.exclude_extensions:
            return "excluded extension"
        return None

    def rejection(
        self,
        key: str,
        *,
        size: int | None = None,
        content_type: str | None = None,
        store: StoreKind | None = None,
        root: str = "",
    ) -> str | None:
        """Why the object is skipped, or None if it is to be scanned (``store`` and
        ``root``: see :meth:`key_rejection`)."""
        reason = self.key_rejection(key, store=store, root=root)
        if reason is not None:
            return reason
        if self.max_size_bytes is not None and size is not None and size > self.max_size_bytes:
            return "larger than ingest.max_size_bytes"
        if content_type:
            ctype = _norm_type(content_type)
            if self.content_types and not ctype.startswith(self.content_types):
                return "content type not included"
            if self.exclude_content_types and ctype.startswith(self.exclude_content_types):
                return "excluded content type"
        return None
