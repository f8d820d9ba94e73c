"""Matching images against the allow/block lists of the ``hashlists`` table.

The entry model, its keys and the store live in :mod:`pipeline.hashlists` (enforce writes
entries too); the file formats in :mod:`classify.hashlist_formats`. Every process that
matches keeps an in-memory copy: exact indexes by sha256, MD5 and SHA-1, and PDQ indexes,
loaded at :meth:`HashLists.start` and kept in step through the table's ``subscribe``, so an
entry added by ``pictguard hashes add``, a feed, or another replica (on Kafka) takes effect
without a restart. Pending feed entries are stored but never matched.

Matching order — exact evidence beats approximate; then this instance's own entries
(added or imported here) beat entries from feeds; then the allowlist beats the blocklist:

1. exact (sha256, SHA-1, MD5): local allow, local block, feed allow, feed block;
2. PDQ within ``pdq_max_distance``: in the same order.

So a reviewed false positive allowed here is never blocked by a feed, a feed's allow (a
known-safe image on another instance) stops this instance acting on its models' verdict,
and a feed's allow never overrides a block an admin made here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from classify.decode import hash_file
from classify.hashlist_formats import FileFormat, RowDefaults, Written, format_of, read_entries
from classify.hashlist_formats import render as render_file
from classify.pdq_index import PdqIndex
from pipeline.hashlists import (
    LOCAL,
    Category,
    HashEntry,
    HashListError,
    HashListStore,
    HashType,
    ListName,
    is_entry_key,
    parse_entry,
)
from pipeline.state.table import Table

log = logging.getLogger(__name__)

__all__ = ["HashListError", "HashLists", "HashMatch"]

# (tier, list) in matching order; tier "local" holds entries added or imported here.
_Slot = tuple[str, ListName]
_SLOTS: tuple[_Slot, ...] = (
    ("local", "allow"),
    ("local", "block"),
    ("feed", "allow"),
    ("feed", "block"),
)
_EXACT_TYPES: tuple[HashType, ...] = ("sha256", "sha1", "md5")


def _slot(entry: HashEntry) -> _Slot:
    return ("feed" if entry.feed is not None else "local", entry.list)


@dataclass(frozen=True, slots=True)
class HashMatch:
    """A hash list entry that matched an image."""

    entry: HashEntry
    how: HashType
    distance: int = 0

    @property
    def label(self) -> str:
        """The verdict's ``matched``: ``blocklist:sha256``, ``allowlist:pdq:12``,
        ``blocklist:md5 (list: ncmec-2024)``, ``blocklist:sha256 (feed: instance-a.example)``."""
        name = f"{self.entry.list}list"
        base = f"{name}:pdq:{self.distance}" if self.how == "pdq" else f"{name}:{self.how}"
        provenance = self.entry.provenance
        return f"{base} ({provenance})" if provenance else base


class HashLists(HashListStore):
    """Read, write and match the allow/block lists of one ``hashlists`` table."""

    def __init__(
        self, table: Table, *, pdq_max_distance: int = 31, pdq_min_quality: int = 50
    ) -> None:
        super().__init__(table)
        self.pdq_max_distance = pdq_max_distance
        self.pdq_min_quality = pdq_min_quality
        self._entries: dict[str, HashEntry] = {}  # matchable entries by table key
        self._exact: dict[HashType, dict[str, list[str]]] = {t: {} for t in _EXACT_TYPES}
        self._pdq: dict[_Slot, PdqIndex] = {slot: PdqIndex() for slot in _SLOTS}
        self._started = False

    # -- matching ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load every entry and follow later changes."""
        if self._started:
            return
        await self.table.start()
        # Subscribe before the scan so no change slips between the two; applying an
        # entry twice is harmless.
        self.table.subscribe(self._on_change)
        batch: dict[_Slot, list[tuple[str, str]]] = {slot: [] for slot in _SLOTS}
        async for key, value in self.table.items():
            entry = self._matchable(key, value)
            if entry is None:
                continue
            self._index_exact(key, entry)
            if self._indexable(entry) and entry.pdq is not None:
                batch[_slot(entry)].append((key, entry.pdq))
        for slot, pairs in batch.items():
            self._pdq[slot].add_many(pairs)
        self._started = True
        log.info(
            "hash lists loaded",
            extra={
                "entries": len(self._entries),
                "md5": len(self._exact["md5"]),
                "sha1": len(self._exact["sha1"]),
                "pdq": self.pdq_entries,
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _matchable(key: str, value: bytes | None) -> HashEntry | None:
        if value is None or not is_entry_key(key):
            return None
        entry = parse_entry(key, value)
        return None if entry is None or entry.pending else entry

    def _on_change(self, key: str, value: bytes | None) -> None:
        if not is_entry_key(key):
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._unindex_exact(key, old)
            if old.pdq is not None:
                self._pdq[_slot(old)].remove(key)
        entry = self._matchable(key, value)
        if entry is None:
            return
        self._index_exact(key, entry)
        if self._indexable(entry) and entry.pdq is not None:
            self._pdq[_slot(entry)].add(key, entry.pdq)

    def _index_exact(self, key: str, entry: HashEntry) -> None:
        self._entries[key] = entry
        for hash_type in _EXACT_TYPES:
            value = getattr(entry, hash_type)
            if value is not None:
                self._exact[hash_type].setdefault(value, []).append(key)

    def _unindex_exact(self, key: str, entry: HashEntry) -> None:
        for hash_type in _EXACT_TYPES:
            value = getattr(entry, hash_type)
            keys = self._exact[hash_type].get(value) if value is not None else None
            if keys is not None and key in keys:
                keys.remove(key)
                if not keys:
                    del self._exact[hash_type][value]

    def _indexable(self, entry: HashEntry) -> bool:
        # An entry hashed from a flat or tiny image has an unreliable PDQ: exact-only.
        return entry.pdq is not None and (
            entry.pdq_quality is None or entry.pdq_quality >= self.pdq_min_quality
        )

    @property
    def wants_md5_sha1(self) -> bool:
        """Whether any entry has an MD5 or SHA-1, so images need those digests too."""
        return bool(self._exact["md5"] or self._exact["sha1"])

    def match_exact(
        self, sha256: str, md5: str | None = None, sha1: str | None = None
    ) -> HashMatch | None:
        """The entry for this exact content, if any (no decode needed)."""
        best: tuple[tuple[int, int, int], HashMatch] | None = None
        for rank, (how, value) in enumerate((("sha256", sha256), ("sha1", sha1), ("md5", md5))):
            if value is None:
                continue
            for key in self._exact[how].get(value, ()):  # type: ignore[index]
                entry = self._entries[key]
                order = (_SLOTS.index(_slot(entry)), rank, 0 if entry.source == LOCAL else 1)
                if best is None or order < best[0]:
                    best = (order, HashMatch(entry, how))  # type: ignore[arg-type]
        return None if best is None else best[1]

    def match_pdq(self, pdq: str | None, quality: int | None) -> HashMatch | None:
        """The nearest entry within distance, in matching order (see the module)."""
        return self.match_pdq_many([(pdq, quality)])[0]

    def match_pdq_many(
        self, queries: Sequence[tuple[str | None, int | None]]
    ) -> list[HashMatch | None]:
        """:meth:`match_pdq` for many images in one index search per list (blocking)."""
        results: list[HashMatch | None] = [None] * len(queries)
        usable = [
            i
            for i, (pdq, quality) in enumerate(queries)
            if pdq is not None and quality is not None and quality >= self.pdq_min_quality
        ]
        for slot in _SLOTS:
            index = self._pdq[slot]
            pending = [i for i in usable if results[i] is None]
            if len(index) == 0 or not pending:
                continue
            hits = index.search([queries[i][0] or "" for i in pending], self.pdq_max_distance)
            for i, hit in zip(pending, hits, strict=True):
                if hit is not None and (entry := self._entries.get(hit.key)) is not None:
                    results[i] = HashMatch(entry, "pdq", hit.distance)
        return results

    @property
    def pdq_entries(self) -> int:
        """How many entries are PDQ-indexed."""
        return sum(len(index) for index in self._pdq.values())

    @property
    def has_pdq_entries(self) -> bool:
        return any(len(index) for index in self._pdq.values())

    # -- editing -----------------------------------------------------------------------

    async def add_image(
        self,
        path: Path,
        *,
        list: ListName = "block",
        reason: str = "",
        author: str = "",
        category: Category = "csam",
        hash_size: int = 256,
        max_pixels: int = 64_000_000,
    ) -> HashEntry:
        """Hash an image file (sha256, MD5, SHA-1 and PDQ, decoded as the engine decodes)
        and add it.

        Raises :class:`classify.decode.DecodeError` for a file that is not a usable image.
        """
        hashes = await asyncio.to_thread(
            hash_file, path, hash_size=hash_size, max_pixels=max_pixels
        )
        return await self.add(
            sha256=hashes.sha256,
            md5=hashes.md5,
            sha1=hashes.sha1,
            pdq=hashes.pdq,
            pdq_quality=hashes.pdq_quality,
            list=list,
            reason=reason,
            author=author,
            category=category,
        )

    # -- files -------------------------------------------------------------------------

    async def import_file(
        self,
        path: Path,
        fmt: FileFormat | None = None,
        *,
        list: ListName | None = None,
        reason: str | None = None,
        author: str | None = None,
        category: Category | None = None,
        source: str | None = None,
        hash_type: HashType | None = None,
    ) -> int:
        """Import a hash-list file (see :mod:`classify.hashlist_formats`); returns the
        number of entries stored.

        ``list``, ``reason``, ``author``, ``category`` and ``source`` fill in rows that lack
        them; ``hash_type`` is the type of bare hashes (``txt``, ``te`` without types).
        Every row must end up with a list. A bad row stops the import with its line number
        before anything is written; so does a file with no entry in it.
        """
        fmt = format_of(path, fmt)
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        defaults = RowDefaults(list, reason, author, category, source, hash_type)
        entries = await asyncio.to_thread(read_entries, text, fmt, defaults, name=str(path))
        for entry in entries:
            await self.put(entry)
        return len(entries)

    async def export(
        self,
        path: Path,
        fmt: FileFormat | None = None,
        *,
        list: ListName | None = None,
        source: str | None = None,
        hash_type: HashType | None = None,
    ) -> Written:
        """Write the matching entries (or one list, source, hash type) to a file."""
        fmt = format_of(path, fmt) or ("txt" if hash_type is not None else "te")
        entries = [entry async for entry in self.entries(list, source=source, hash_type=hash_type)]
        text, written = render_file(entries, fmt, hash_type=hash_type)
        await asyncio.to_thread(path.write_text, text, encoding="utf-8")
        return written
