"""Hash-list files: the formats ``pictguard hashes import`` reads and ``export`` writes.

- ``csv``: a header row naming the columns of :data:`CSV_COLUMNS` (any subset with at least
  one hash column), or the CSV ``threatexchange dataset --csv`` prints (``signal_type,
  signal_str, collab, category, tags``; ``POSITIVE_CLASS`` rows block, ``NEGATIVE_CLASS``
  rows allow).
- ``jsonl``: one JSON object per line with the same keys.
- ``te``: ``<signal type> <hash>`` per line, what python-threatexchange's file exchange
  (``LocalFileSignalExchangeAPI``, which HMA 2.0 fetches from) reads and ``threatexchange
  dataset -P`` prints: ``pdq <64 hex>``, ``video_md5 <32 hex>`` (the MD5 of the file's
  bytes, HMA's only MD5 type); pictguard also reads ``md5``, ``sha1`` and ``sha256``. Text
  after the hash (``dataset -P`` prints the collaboration and its opinion) is ignored.
  HMA 2.0 has no bank export of its own (its curation API adds and reads single items):
  this is the file format banks are filled from.
- ``txt``: one bare hash per line, its type given on the command line (``--type``): how
  NCMEC and industry MD5/SHA-1 lists usually arrive.

A file that cannot be read as the format given stops the import with its line number and
what was expected; nothing is written from it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pydantic import ValidationError

from pipeline.hashlists import (
    HASH_TYPES,
    LOCAL,
    Category,
    HashEntry,
    HashListError,
    HashType,
    ListName,
    encode_entry,
    first_error,
)

FileFormat = Literal["csv", "jsonl", "te", "txt"]
FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)
CSV_COLUMNS = (
    "list",
    "sha256",
    "md5",
    "sha1",
    "pdq",
    "pdq_quality",
    "category",
    "reason",
    "author",
    "created_at",
    "source",
)
# python-threatexchange signal type names (``SignalType.get_name()``) → pictguard's.
SIGNAL_TYPES: dict[str, HashType] = {
    "pdq": "pdq",
    "video_md5": "md5",
    "md5": "md5",
    "sha1": "sha1",
    "sha256": "sha256",
}
# What pictguard writes in a ``te`` file: the types ThreatExchange and HMA know.
TE_EXPORT_NAMES: dict[HashType, str] = {"pdq": "pdq", "md5": "video_md5"}
# ``threatexchange dataset --csv``'s opinion column → the list.
TE_OPINIONS: dict[str, ListName] = {"POSITIVE_CLASS": "block", "NEGATIVE_CLASS": "allow"}
_TE_CSV = ("signal_type", "signal_str")
_HASH_COLUMNS = (*HASH_TYPES, "signal_str")


@dataclass(frozen=True, slots=True)
class RowDefaults:
    """What the command line gives rows that do not say it themselves."""

    list: ListName | None = None
    reason: str | None = None
    author: str | None = None
    category: Category | None = None
    source: str | None = None
    hash_type: HashType | None = None


@dataclass(slots=True)
class Written:
    """What an export wrote: entries written, and those the format cannot carry."""

    written: int = 0
    skipped: int = 0
    why_skipped: str = ""


@dataclass(slots=True)
class _Row:
    line: int
    data: dict[str, object] = field(default_factory=dict)


def format_of(path: Path, given: str | None = None) -> FileFormat | None:
    """The format named on the command line or by the file's extension; None when only the
    content can tell (``.txt`` and others: ``te`` or ``txt``)."""
    if given is not None:
        if given not in FORMATS:
            raise HashListError(f"unknown format {given!r}: use {', '.join(FORMATS)}")
        return given  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".te":
        return "te"
    return None


def read_entries(
    text: str, fmt: FileFormat | None, defaults: RowDefaults, *, name: str
) -> list[HashEntry]:
    """Every entry of a file's ``text``; :class:`HashListError` naming ``name:line`` at the
    first row that cannot be read (or when there is no entry at all)."""
    if fmt is None:
        fmt = _sniff(text, defaults, name)
    if defaults.hash_type is not None and fmt in ("csv", "jsonl"):
        raise HashListError(f"--type is for te and txt files; a {fmt} file names its columns")
    if fmt in ("te", "txt") and defaults.list is None:
        # Never guess: an allowlist imported as a blocklist quarantines what it should let by.
        raise HashListError(
            f"{name}: a {fmt} file does not say which list its hashes are for: "
            "give --allow or --block"
        )
    rows: Iterable[_Row]
    if fmt == "csv":
        rows = _csv_rows(text, name)
    elif fmt == "jsonl":
        rows = _jsonl_rows(text, name)
    elif fmt == "te":
        rows = _te_rows(text, name, defaults.hash_type)
    else:
        rows = _txt_rows(text, name, defaults.hash_type)
    entries = [_entry(row, defaults, where=f"{name}:{row.line}") for row in rows]
    if not entries:
        raise HashListError(f"{name}: no entries found; {_EXPECTED[fmt]}")
    return entries


_EXPECTED: dict[FileFormat, str] = {
    "csv": "expected a header row (list, sha256, md5, sha1, pdq, …) and one row per image",
    "jsonl": "expected one JSON object per line",
    "te": "expected '<signal type> <hash>' lines such as 'pdq <64 hex digits>'",
    "txt": "expected one hash per line",
}


def _sniff(text: str, defaults: RowDefaults, name: str) -> FileFormat:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        if tokens[0].lower() in SIGNAL_TYPES and len(tokens) > 1:
            return "te"
        if defaults.hash_type is not None:
            return "txt"
        if stripped.startswith("{"):
            return "jsonl"
        if "," in stripped:
            return "csv"
        raise HashListError(
            f"{name}:{number}: cannot tell the format from {stripped[:70]!r}: for one bare "
            "hash per line say its type with --type md5|sha1|sha256|pdq, or give --format "
            "csv|jsonl|te|txt"
        )
    raise HashListError(f"{name}: the file is empty")


def _csv_rows(text: str, name: str) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    te = False
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            if not any(c in _HASH_COLUMNS for c in header):
                first = cells[0].strip()
                hint = (
                    "it looks like a hash, not a header row: for a file of bare hashes use "
                    "--format txt --type md5|sha1|sha256|pdq, or add a header row (e.g. md5)"
                    if first and all(ch in "0123456789abcdefABCDEF" for ch in first)
                    else "name the columns in the first row"
                )
                raise HashListError(
                    f"{name}:{reader.line_num}: expected a header row naming the columns "
                    f"(list, sha256, md5, sha1, pdq, pdq_quality, category, reason, author) "
                    f"with at least one hash column, got {','.join(cells)[:80]!r}: {hint}"
                )
            te = all(c in header for c in _TE_CSV)
            continue
        if len(cells) > len(header):
            raise HashListError(
                f"{name}:{reader.line_num}: {len(cells)} fields, but the header names "
                f"{len(header)} columns"
            )
        row = dict(zip(header, cells, strict=False))
        if not te:
            yield _Row(reader.line_num, dict(row))
            continue
        try:
            data = _from_te_csv(row)
        except HashListError as exc:
            raise HashListError(f"{name}:{reader.line_num}: {exc}") from None
        yield _Row(reader.line_num, data)


def _from_te_csv(row: dict[str, str]) -> dict[str, object]:
    kind = row.get("signal_type", "").strip().lower()
    hash_type = SIGNAL_TYPES.get(kind)
    if hash_type is None:
        raise HashListError(
            f"signal_type {kind!r} is not one pictguard matches ({', '.join(SIGNAL_TYPES)})"
        )
    data: dict[str, object] = {hash_type: row.get("signal_str", "")}
    opinion = row.get("category", "").strip().upper()
    if opinion:
        if opinion not in TE_OPINIONS:
            raise HashListError(
                f"category {opinion!r}: only POSITIVE_CLASS (block) and NEGATIVE_CLASS (allow) "
                "rows import; an INVESTIGATION_SEED needs review first"
            )
        data["list"] = TE_OPINIONS[opinion]
    if row.get("collab"):
        data["reason"] = f"ThreatExchange: {row['collab']}"
    return data


def _jsonl_rows(text: str, name: str) -> Iterator[_Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HashListError(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise HashListError(f"{name}:{number}: expected a JSON object")
        yield _Row(number, row)


def _te_rows(text: str, name: str, default_type: HashType | None) -> Iterator[_Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        kind = tokens[0].lower()
        if kind in SIGNAL_TYPES and len(tokens) > 1:
            yield _Row(number, {SIGNAL_TYPES[kind]: tokens[1]})
        elif default_type is not None and len(tokens) == 1:
            yield _Row(number, {default_type: tokens[0]})
        else:
            raise HashListError(
                f"{name}:{number}: expected '<signal type> <hash>' with a signal type of "
                f"{', '.join(SIGNAL_TYPES)}, got {stripped[:70]!r}"
            )


def _txt_rows(text: str, name: str, hash_type: HashType | None) -> Iterator[_Row]:
    if hash_type is None:
        raise HashListError(
            f"{name}: a file of bare hashes needs their type: --type md5|sha1|sha256|pdq"
        )
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(stripped.split()) != 1:
            raise HashListError(
                f"{name}:{number}: expected one {hash_type} hash per line, got {stripped[:70]!r}"
            )
        yield _Row(number, {hash_type: stripped})


def _entry(row: _Row, defaults: RowDefaults, *, where: str) -> HashEntry:
    data = {k: v for k, v in row.data.items() if v not in (None, "")}
    for key in ("list", "reason", "author", "category", "source"):
        value = getattr(defaults, key)
        if value is not None:
            data.setdefault(key, value)
    if "list" not in data:
        raise HashListError(
            f"{where}: the row does not say which list it is for: give --allow or --block, "
            "or a list column (allow or block) on every row"
        )
    if data.get("pending"):
        raise HashListError(f"{where}: pending feed entries are not imported")
    try:
        return HashEntry.model_validate(data)
    except ValidationError as exc:
        raise HashListError(f"{where}: {first_error(exc)}") from None


def render(
    entries: Sequence[HashEntry], fmt: FileFormat, *, hash_type: HashType | None = None
) -> tuple[str, Written]:
    """The file text for ``entries`` in ``fmt``, and what it holds."""
    if hash_type is not None and fmt in ("csv", "jsonl"):
        raise HashListError("--type is for te and txt files; csv and jsonl carry every hash")
    if fmt == "jsonl":
        text = "".join(encode_entry(e).decode() + "\n" for e in entries)
        return text, Written(len(entries))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            row = entry.model_dump(mode="json")
            if row.get("source") == LOCAL:
                row["source"] = None
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
        return out.getvalue(), Written(len(entries))
    if fmt == "txt":
        if hash_type is None:
            raise HashListError("a txt file holds one type of hash: give --type")
        values = [v for e in entries if (v := getattr(e, hash_type)) is not None]
        written = Written(len(values), len(entries) - len(values), f"no {hash_type}")
        return "".join(v + "\n" for v in values), written
    types = (hash_type,) if hash_type is not None else tuple(TE_EXPORT_NAMES)
    lines = []
    skipped = 0
    for entry in entries:
        mine = [
            f"{TE_EXPORT_NAMES.get(t, t)} {getattr(entry, t)}\n"
            for t in types
            if getattr(entry, t) is not None
        ]
        lines += mine
        skipped += not mine
    why = "neither pdq nor md5 (the types ThreatExchange and HMA know)"
    return "".join(lines), Written(len(entries) - skipped, skipped, why)
