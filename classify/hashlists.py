"""Allowlist and blocklist of image hashes, stored in the ``hashlists`` table.

One entry per image, keyed by its sha256 (``pdq:<hex>`` for entries known only by PDQ,
as imported lists often are). The value is the JSON of :class:`HashEntry`. Writes go to the
table; every process that matches keeps an in-memory copy and a PDQ index, loaded at
:meth:`HashLists.start` and kept in step through the table's ``subscribe``, so an entry
added by ``pictguard hashes add`` (or another replica, on Kafka) takes effect without a
restart.

Matching order — exact evidence beats approximate, and at the same strength the allowlist
beats the blocklist: exact allow, exact block, PDQ-near allow, PDQ-near block.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from classify.decode import hash_file
from classify.pdq_index import PdqIndex
from pipeline.hashlists import (
    Category,
    HashEntry,
    HashListError,
    HashListStore,
    ListName,
    first_error,
    parse_entry,
)
from pipeline.state.table import Table

log = logging.getLogger(__name__)

FileFormat = Literal["csv", "jsonl"]
CSV_COLUMNS = ("list", "sha256", "pdq", "pdq_quality", "category", "reason", "author", "created_at")


@dataclass(frozen=True, slots=True)
class HashMatch:
    """A hash list entry that matched an image."""

    entry: HashEntry
    how: Literal["sha256", "pdq"]
    distance: int = 0

    @property
    def label(self) -> str:
        """``blocklist:sha256``, ``allowlist:pdq:12``, … (the verdict's ``matched``)."""
        name = f"{self.entry.list}list"
        return f"{name}:sha256" if self.how == "sha256" else f"{name}:pdq:{self.distance}"


class HashLists(HashListStore):
    """Read, write and match the allow/block lists of one ``hashlists`` table."""

    def __init__(
        self, table: Table, *, pdq_max_distance: int = 31, pdq_min_quality: int = 50
    ) -> None:
        super().__init__(table)
        self.pdq_max_distance = pdq_max_distance
        self.pdq_min_quality = pdq_min_quality
        self._entries: dict[str, HashEntry] = {}
        self._pdq: dict[ListName, PdqIndex] = {"allow": PdqIndex(), "block": PdqIndex()}
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
        batch: dict[ListName, list[tuple[str, str]]] = {"allow": [], "block": []}
        async for key, value in self.table.items():
            entry = parse_entry(key, value)
            if entry is None:
                continue
            self._entries[key] = entry
            if self._indexable(entry) and entry.pdq is not None:
                batch[entry.list].append((key, entry.pdq))
        for name, pairs in batch.items():
            self._pdq[name].add_many(pairs)
        self._started = True
        log.info(
            "hash lists loaded",
            extra={
                "entries": len(self._entries),
                "pdq_allow": len(self._pdq["allow"]),
                "pdq_block": len(self._pdq["block"]),
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    def _on_change(self, key: str, value: bytes | None) -> None:
        for index in self._pdq.values():
            index.remove(key)
        self._entries.pop(key, None)
        if value is None:
            return
        entry = parse_entry(key, value)
        if entry is None:
            return
        self._entries[key] = entry
        if self._indexable(entry) and entry.pdq is not None:
            self._pdq[entry.list].add(key, entry.pdq)

    def _indexable(self, entry: HashEntry) -> bool:
        # An entry hashed from a flat or tiny image has an unreliable PDQ: exact-only.
        return entry.pdq is not None and (
            entry.pdq_quality is None or entry.pdq_quality >= self.pdq_min_quality
        )

    def match_exact(self, sha256: str) -> HashMatch | None:
        """The entry for this exact content, if any (no decode needed)."""
        entry = self._entries.get(sha256)
        return HashMatch(entry, "sha256") if entry is not None else None

    def match_pdq(self, pdq: str | None, quality: int | None) -> HashMatch | None:
        """The nearest allow entry within distance, else the nearest block entry."""
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
        lists: tuple[ListName, ...] = ("allow", "block")
        for name in lists:
            index = self._pdq[name]
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
        """Hash an image file (sha256 + PDQ, decoded as the engine decodes) and add it.

        Raises :class:`classify.decode.DecodeError` for a file that is not a usable image.
        """
        hashes = await asyncio.to_thread(
            hash_file, path, hash_size=hash_size, max_pixels=max_pixels
        )
        return await self.add(
            sha256=hashes.sha256,
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
    ) -> int:
        """Import a CSV or JSONL file; returns the number of entries stored.

        Columns/keys are those of :data:`CSV_COLUMNS`; ``list``, ``reason``, ``author`` and
        ``category`` given here fill in rows that lack them. Every row must end up with a
        list (its own column or ``list``). A bad row stops the import with its line number
        before anything is written.
        """
        fmt = fmt or _format_of(path)
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        defaults = {"list": list, "reason": reason, "author": author, "category": category}
        entries = [
            _entry_from_row(row, defaults, where=f"{path}:{line}")
            for line, row in _read_rows(text, fmt)
        ]
        for entry in entries:
            await self.put(entry)
        return len(entries)

    async def export(
        self,
        path: Path,
        fmt: FileFormat | None = None,
        *,
        list: ListName | None = None,
    ) -> int:
        """Write every entry (or one list) to a CSV or JSONL file; returns the count."""
        fmt = fmt or _format_of(path)
        entries = [entry async for entry in self.entries(list)]
        await asyncio.to_thread(path.write_text, _render(entries, fmt), encoding="utf-8")
        return len(entries)


def _format_of(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise HashListError(f"cannot tell the format of {path} from its name: use .csv or .jsonl")


def _read_rows(text: str, fmt: FileFormat) -> Iterable[tuple[int, dict[str, object]]]:
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HashListError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise HashListError(f"line {number}: expected a JSON object")
        yield number, row


def _entry_from_row(
    row: dict[str, object], defaults: dict[str, str | None], *, where: str
) -> HashEntry:
    data = {k: v for k, v in row.items() if v not in (None, "")}
    for key, value in defaults.items():
        if value is not None:
            data.setdefault(key, value)
    if "list" not in data:
        # Never guess: an allowlist imported as a blocklist quarantines what it should let by.
        raise HashListError(
            f"{where}: the row does not say which list it is for: give --allow or --block, "
            "or a list column (allow or block) on every row"
        )
    try:
        return HashEntry.model_validate(data)
    except ValidationError as exc:
        raise HashListError(f"{where}: {first_error(exc)}") from None


def _render(entries: list[HashEntry], fmt: FileFormat) -> str:
    if fmt == "jsonl":
        return "".join(entry.model_dump_json(exclude_none=True) + "\n" for entry in entries)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        row = entry.model_dump(mode="json")
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return out.getvalue()
