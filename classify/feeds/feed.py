"""The feed file format, checking a pulled feed, and publishing this instance's entries.

A feed is two objects side by side, served as they are by any static host or bucket:

``feed.jsonl``
    Append-only JSON lines. The first is the header
    (``{"format": "pictguard-feed/1", "feed": "<name>", "key": "ed25519:…", "created_at": …}``);
    every further line is a change, numbered from 1::

        {"seq": 1, "op": "add", "type": "sha256", "hash": "…", "list": "block",
         "category": "csam", "reason": "confirmed", "time": "…", "pdq": "…", "pdq_quality": 92}
        {"seq": 2, "op": "remove", "type": "sha256", "hash": "…", "time": "…"}

    ``type``/``hash`` are the entry's first hash (sha256, md5, sha1, pdq in that order) and
    name it; an ``add`` carries the image's other hashes too (a PDQ, so near-duplicates
    match). The same hash added again replaces the earlier add (a list or category changed).

``feed.jsonl.sig``
    ``{"format": "pictguard-feed-sig/1", "bytes": N, "seq": S, "sha256": "…",
    "signature": "<base64>"}``: the publisher's ed25519 signature of the first ``N`` bytes
    of ``feed.jsonl``. The feed is written first and the signature after it, so a reader
    between the two writes sees a longer feed with the previous signature, which still
    covers a prefix of it: the unsigned tail is left for the next pull.

A subscriber (:func:`check`) accepts a pull only if the signature verifies with the key
it subscribed with over bytes that parse, and if those bytes extend — byte for byte —
what it applied before; a tampered, truncated, replayed (older) or rewritten feed, or one
signed by another key, is refused whole and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from classify.feeds import keys
from pipeline.errors import PictguardError
from pipeline.events import StoreKind, utcnow
from pipeline.hashlists import (
    HASH_TYPES,
    LOCAL,
    Category,
    HashEntry,
    HashListStore,
    HashType,
    ListName,
    base_key,
    first_error,
    normalize_hash,
)
from pipeline.storage.base import ObjectMissing, ObjectStore
from pipeline.storage.locations import Location

log = logging.getLogger(__name__)

FORMAT = "pictguard-feed/1"
SIG_FORMAT = "pictguard-feed-sig/1"
FEED_FILE = "feed.jsonl"
SIG_SUFFIX = ".sig"
# A reason that is already a code (``confirmed``, ``stopncii-match``) is published as it
# is; free text stays on this instance (it may name people or reports).
_REASON_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_DEFAULT_CODES: dict[ListName, str] = {"block": "confirmed", "allow": "known-safe"}


class FeedError(PictguardError, ValueError):
    """A feed cannot be published or read; the message says what to change."""


class FeedRejected(FeedError):
    """A pulled feed failed a check (signature, truncation, replay, format): nothing of it
    was applied."""


class FeedHeader(BaseModel):
    """The first line of a feed."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["pictguard-feed/1"]
    feed: str
    key: str
    created_at: datetime


class FeedRecord(BaseModel):
    """One change in a feed: an entry added (or replaced), or removed."""

    model_config = ConfigDict(extra="ignore")

    seq: int = Field(ge=1)
    op: Literal["add", "remove"]
    type: HashType
    hash: str
    time: datetime
    list: ListName | None = None
    category: Category | None = None
    reason: str | None = None
    sha256: str | None = None
    md5: str | None = None
    sha1: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _valid(self) -> FeedRecord:
        self.hash = normalize_hash(self.type, self.hash)
        for hash_type in HASH_TYPES:
            value = getattr(self, hash_type)
            if value is not None:
                setattr(self, hash_type, normalize_hash(hash_type, value))
        if self.op == "add" and self.list is None:
            raise ValueError("an add needs a list")
        return self

    @property
    def key(self) -> str:
        """The local key of the entry the record is about."""
        return base_key(self.type, self.hash)

    def entry(self, feed: str, *, pending: bool) -> HashEntry:
        """The hash-list entry an ``add`` stands for, with the feed as its source."""
        hashes = {t: getattr(self, t) for t in HASH_TYPES}
        hashes[self.type] = self.hash
        return HashEntry(
            list=self.list or "block",
            **hashes,
            pdq_quality=self.pdq_quality,
            category=self.category or "csam",
            reason=self.reason or "",
            created_at=self.time,
            source=f"feed:{feed}",
            pending=pending,
        )

    def same_entry(self, entry: HashEntry) -> bool:
        """Whether ``entry`` already says what this ``add`` says."""
        mine = self.entry(entry.feed or "", pending=False)
        return (mine.list, mine.category, mine.reason, mine.hashes()) == (
            entry.list,
            entry.category,
            entry.reason,
            entry.hashes(),
        )


class FeedSignature(BaseModel):
    """The ``.sig`` file next to a feed."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["pictguard-feed-sig/1"]
    bytes: int = Field(ge=0)
    seq: int = Field(ge=0)
    sha256: str = ""
    signature: str


@dataclass(frozen=True, slots=True)
class Feed:
    """A feed whose signed part checked out."""

    header: FeedHeader
    records: list[FeedRecord]
    signed: bytes

    @property
    def seq(self) -> int:
        return self.records[-1].seq if self.records else 0


def reason_code(entry: HashEntry) -> str:
    """What a feed says about why: the entry's reason if it is a short code, else
    ``confirmed`` (block) or ``known-safe`` (allow)."""
    reason = entry.reason.strip()
    return reason if _REASON_CODE.match(reason) else _DEFAULT_CODES[entry.list]


def record_of(entry: HashEntry, seq: int) -> FeedRecord:
    """The ``add`` record publishing ``entry``."""
    others = {t: v for t, v in entry.hashes().items() if t != entry.hash_type}
    return FeedRecord(
        seq=seq,
        op="add",
        type=entry.hash_type,
        hash=entry.hash_value,
        time=entry.created_at,
        list=entry.list,
        category=entry.category,
        reason=reason_code(entry),
        pdq_quality=entry.pdq_quality if entry.pdq is not None else None,
        **others,
    )


def _line(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode() + b"\n"


def check(
    data: bytes,
    signature_file: bytes,
    key: Ed25519PublicKey,
    *,
    applied_bytes: int = 0,
    applied_sha256: str = "",
    applied_seq: int = 0,
) -> Feed:
    """The signed part of a pulled feed, checked; :class:`FeedRejected` saying why not.

    ``applied_*`` describe what this subscriber applied before: the signed part must
    extend it (same first ``applied_bytes`` bytes, a sequence no older).
    """
    try:
        sig = FeedSignature.model_validate_json(signature_file)
    except ValidationError as exc:
        why = first_error(exc)
        raise FeedRejected(f"the signature file is not a feed signature ({why})") from None
    if len(data) < sig.bytes:
        raise FeedRejected(
            f"truncated: the signature covers {sig.bytes} bytes, the feed has {len(data)}"
        )
    signed = data[: sig.bytes]
    if not keys.verify(key, sig.signature, signed):
        raise FeedRejected(
            "the signature does not verify with the subscribed key: the feed was altered, "
            "or signed with another key"
        )
    feed = parse(signed)
    if feed.seq < applied_seq or sig.bytes < applied_bytes:
        raise FeedRejected(
            f"replayed: the feed ends at seq {feed.seq} ({sig.bytes} bytes), older than seq "
            f"{applied_seq} ({applied_bytes} bytes) already applied"
        )
    if applied_bytes and hashlib.sha256(signed[:applied_bytes]).hexdigest() != applied_sha256:
        raise FeedRejected(
            f"rewritten: the first {applied_bytes} bytes differ from what was applied; a "
            "feed only grows (re-subscribe to start over from a rewritten feed)"
        )
    return feed


def parse(signed: bytes) -> Feed:
    """Header and records of signed feed bytes; :class:`FeedRejected` at a bad line."""
    lines = signed.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        raise FeedRejected("the signed part does not end at a line end")
    if not lines:
        raise FeedRejected("the feed is empty")
    try:
        header = FeedHeader.model_validate_json(lines[0])
    except ValidationError as exc:
        raise FeedRejected(f"line 1 is not a {FORMAT} header ({first_error(exc)})") from None
    records: list[FeedRecord] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = FeedRecord.model_validate_json(line)
        except (ValidationError, ValueError) as exc:
            why = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise FeedRejected(f"line {number}: not a feed record ({why})") from None
        expected = records[-1].seq + 1 if records else 1
        if record.seq != expected:
            raise FeedRejected(f"line {number}: seq {record.seq}, expected {expected}")
        records.append(record)
    return Feed(header, records, signed)


# -- publishing --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """What one publish wrote."""

    target: str
    seq: int
    added: int
    removed: int
    bytes: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def open_target(location: Location, stores: Callable[[Location], ObjectStore]) -> ObjectStore:
    """The store a feed is published to (a local folder is created if missing)."""
    if location.kind is StoreKind.FILE:
        Path(location.root).mkdir(parents=True, exist_ok=True)
    return stores(location)


async def publish(
    lists: HashListStore,
    target: ObjectStore,
    prefix: str,
    key: Ed25519PrivateKey,
    name: str,
    *,
    sources: Sequence[str] = (LOCAL,),
    max_bytes: int = 1 << 30,
    now: Callable[[], datetime] = utcnow,
) -> Published:
    """Append to the feed at ``target``/``prefix`` what changed in the entries of
    ``sources`` since it was last published, and sign it.

    Only entries of ``sources`` that match are published — never pending entries, never
    entries that came from other feeds (no echo between instances that follow each
    other), and imported lists only when named (their licence may forbid sharing).
    """
    feed_key = f"{prefix.rstrip('/')}/{FEED_FILE}" if prefix.strip("/") else FEED_FILE
    where = f"{target.location}/{feed_key}"
    public = key.public_key()
    try:
        old = await target.get(feed_key, max_bytes)
    except ObjectMissing:
        old = None
    if old is None:
        header = FeedHeader(
            format=FORMAT, feed=name, key=keys.public_text(public), created_at=now()
        )
        feed = Feed(header, [], _line(header))
    else:
        try:
            signature = await target.get(feed_key + SIG_SUFFIX, 1 << 16)
        except ObjectMissing:
            raise FeedError(
                f"{where} exists without its {SIG_SUFFIX} file: move it away to start a new feed"
            ) from None
        try:
            feed = check(old, signature, public)
        except FeedRejected as exc:
            raise FeedError(
                f"the feed at {where} cannot be extended: {exc} — publish with the key that "
                "made it, or to a new place"
            ) from None
    # What the feed says now, by entry key: the last add of each key not removed since.
    live: dict[str, FeedRecord] = {}
    for record in feed.records:
        if record.op == "add":
            live[record.key] = record
        else:
            live.pop(record.key, None)
    seq = feed.seq
    lines: list[bytes] = []
    current: dict[str, HashEntry] = {}
    for source in sources:
        async for entry in lists.entries(source=source):
            if entry.feed is None:
                current[entry.base_key] = entry
    for entry_key in sorted(current):
        entry = current[entry_key]
        record = record_of(entry, seq + 1)
        if entry_key in live and _same(live[entry_key], record):
            continue
        seq += 1
        lines.append(_line(record))
    removed = 0
    for entry_key in sorted(set(live) - set(current)):
        gone = live[entry_key]
        seq += 1
        removed += 1
        record = FeedRecord(seq=seq, op="remove", type=gone.type, hash=gone.hash, time=now())
        lines.append(_line(record))
    if not lines and old is not None:
        return Published(where, seq, 0, 0, len(feed.signed))
    data = feed.signed + b"".join(lines)
    sig = FeedSignature(
        format=SIG_FORMAT,
        bytes=len(data),
        seq=seq,
        sha256=hashlib.sha256(data).hexdigest(),
        signature=keys.sign(key, data),
    )
    # Feed first, then its signature: a reader in between still finds a signed prefix.
    await target.put(feed_key, data)
    await target.put(feed_key + SIG_SUFFIX, json.dumps(sig.model_dump()).encode() + b"\n")
    added = len(lines) - removed
    log.info(
        "feed published",
        extra={"target": where, "seq": seq, "added": added, "removed": removed},
    )
    return Published(where, seq, added, removed, len(data))


def _same(a: FeedRecord, b: FeedRecord) -> bool:
    fields = {"seq", "time"}
    return a.model_dump(exclude=fields) == b.model_dump(exclude=fields)
