"""The hash-list store: allow/block entries in the ``hashlists`` table, shared by roles.

Classify matches images against these entries (``classify.hashlists.HashLists`` adds the
in-memory index); enforce and the admin flows add and remove entries (allow a false
positive, block a confirmed image); the feed subscriber (``classify.feeds``) writes the
entries other instances publish. All of them go through :class:`HashListStore`, so the
entry format and its key are defined once.

An entry carries one or more hashes of one image — sha256 (pictguard's own), MD5 and SHA-1
(what NCMEC and industry lists carry), PDQ (what ThreatExchange, HMA and StopNCII share) —
and where it came from (:attr:`HashEntry.source`). Its table key says both, so no two
sources overwrite each other and a key never means two things:

============================  ==========================================================
``<sha256 hex>``              a local entry (added here, or imported) with a sha256
``md5:<hex>``, ``sha1:<hex>``  a local entry known by that hash only (no sha256)
``pdq:<hex>``                 a local entry known by PDQ only
``feed:<name>:<base key>``    an entry of the subscribed feed ``<name>``
``pending:<name>:<base key>`` a feed entry waiting for an admin (never matched)
``meta:<name>``               not an entry: feed subscriptions and their progress
============================  ==========================================================

``<base key>`` is the local key form (the first four rows). The value is the JSON of
:class:`HashEntry`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import PictguardError
from pipeline.events import utcnow
from pipeline.state.table import Table

log = logging.getLogger(__name__)

ListName = Literal["allow", "block"]
Category = Literal["csam", "nsfw"]
HashType = Literal["sha256", "md5", "sha1", "pdq"]
# In the order an entry's key prefers them: sha256 first (pictguard's own key).
HASH_TYPES: tuple[HashType, ...] = ("sha256", "md5", "sha1", "pdq")
HEX_DIGITS: dict[HashType, int] = {"sha256": 64, "md5": 32, "sha1": 40, "pdq": 64}
LOCAL = "local"
FEED_PREFIX = "feed:"
PENDING_PREFIX = "pending:"
META_PREFIX = "meta:"
# A source label (an imported list's name) or a feed name: DNS-name-like, no colon, so
# keys split unambiguously.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_HEX = re.compile(r"^[0-9a-f]+$")


class InvalidHashError(PictguardError, ValueError):
    """A hash string is not the right number of hex digits for its type."""


class HashListError(PictguardError, ValueError):
    """A hash list entry or file is invalid; the message names the line and the field."""


def normalize_hex(value: str, what: str = "hash", digits: int = 64) -> str:
    """Lowercase, strip and check a hex hash of ``digits`` digits (64: sha256 or PDQ)."""
    text = value.strip().lower()
    if len(text) != digits or not _HEX.match(text):
        raise InvalidHashError(f"{what} must be {digits} hex digits, got {value!r}")
    return text


def normalize_hash(hash_type: HashType, value: str) -> str:
    """:func:`normalize_hex` with the length of ``hash_type``."""
    return normalize_hex(value, hash_type, HEX_DIGITS[hash_type])


def check_name(value: str, what: str = "name") -> str:
    """A source label or feed name: lowercase letters, digits, ``.``, ``_`` and ``-``."""
    text = value.strip().lower()
    if not _NAME.match(text):
        raise HashListError(
            f"{what} {value!r} must be 1–63 lowercase letters, digits, '.', '_' or '-' "
            "(e.g. instance-a.example or ncmec-2024)"
        )
    return text


def base_key(hash_type: HashType, value: str) -> str:
    """The local key of an entry whose first hash is ``hash_type`` ``value``."""
    return value if hash_type == "sha256" else f"{hash_type}:{value}"


def is_entry_key(key: str) -> bool:
    """False for the ``meta:`` records that share the table with the entries."""
    return not key.startswith(META_PREFIX)


class HashEntry(BaseModel):
    """One allow/block entry: hashes of one image, the list, and where it came from."""

    list: ListName
    sha256: str | None = None
    md5: str | None = None
    sha1: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = Field(None, ge=0, le=100)
    category: Category = "csam"
    reason: str = ""
    author: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    # ``local`` (added or imported here), a label an admin gave an imported list
    # (``ncmec-2024``), or ``feed:<name>`` (written by the feed subscriber).
    source: str = LOCAL
    # A feed entry from a source trusted for review only: stored, never matched, until an
    # admin accepts it (``pictguard feeds accept``).
    pending: bool = False

    @field_validator("sha256", "md5", "sha1", "pdq", mode="before")
    @classmethod
    def _hex(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        name: HashType = info.field_name  # type: ignore[assignment]
        return normalize_hash(name, str(value))

    @field_validator("pdq_quality", mode="before")
    @classmethod
    def _quality(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: object) -> object:
        if value is None or value == "":
            return LOCAL
        text = str(value).strip().lower()
        name = text.removeprefix(FEED_PREFIX)
        if not _NAME.match(name):
            raise ValueError(
                f"{value!r} is not a source: use a label of lowercase letters, digits, "
                "'.', '_' or '-' (or feed:<name>)"
            )
        return text

    @model_validator(mode="after")
    def _some_hash(self) -> HashEntry:
        if all(getattr(self, t) is None for t in HASH_TYPES):
            raise ValueError("an entry needs a sha256, md5, sha1 or pdq")
        if self.pending and self.feed is None:
            raise ValueError("only feed entries can be pending")
        return self

    @property
    def hash_type(self) -> HashType:
        """The entry's first hash (sha256, md5, sha1, pdq in that order): what keys it."""
        return next(t for t in HASH_TYPES if getattr(self, t) is not None)

    @property
    def hash_value(self) -> str:
        """The value of :attr:`hash_type`."""
        value: str = getattr(self, self.hash_type)
        return value

    @property
    def base_key(self) -> str:
        """The key this entry would have as a local entry."""
        return base_key(self.hash_type, self.hash_value)

    @property
    def feed(self) -> str | None:
        """The feed's name for an entry from a feed, else None."""
        return self.source[len(FEED_PREFIX) :] if self.source.startswith(FEED_PREFIX) else None

    @property
    def key(self) -> str:
        """The table key (see the module docstring)."""
        feed = self.feed
        if feed is None:
            return self.base_key
        prefix = PENDING_PREFIX if self.pending else FEED_PREFIX
        return f"{prefix}{feed}:{self.base_key}"

    @property
    def provenance(self) -> str:
        """Where the entry came from, for verdicts and listings: ``""`` for a local entry,
        ``feed: instance-a.example``, or ``list: ncmec-2024``."""
        if self.source == LOCAL:
            return ""
        feed = self.feed
        return f"feed: {feed}" if feed is not None else f"list: {self.source}"

    def hashes(self) -> dict[HashType, str]:
        """Every hash the entry has, by type."""
        return {t: v for t in HASH_TYPES if (v := getattr(self, t)) is not None}


def feed_key(feed: str, key: str, *, pending: bool = False) -> str:
    """The table key of the feed entry with local key ``key``."""
    return f"{PENDING_PREFIX if pending else FEED_PREFIX}{feed}:{key}"


@dataclass(frozen=True, slots=True)
class EntryHashes:
    """What a hash list entry can hold about one image: sha256 and, if it decodes, PDQ."""

    sha256: str
    pdq: str | None = None
    pdq_quality: int | None = None


# The hasher contract: bytes in, hashes out (blocking; call it off the event loop). Classify
# provides the real one (decode + PDQ); the composition root hands it to whoever adds
# entries for images it is given, so they hash an image the way classify matches it.
Hasher = Callable[[bytes], EntryHashes]


def sha256_only(data: bytes) -> EntryHashes:
    """A :data:`Hasher` without PDQ, for callers given no real one."""
    return EntryHashes(hashlib.sha256(data).hexdigest())


def first_error(exc: ValidationError) -> str:
    """The first validation problem, as ``field: message``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "entry"
    message = str(first["msg"]).removeprefix("Value error, ")
    return message if message.startswith(f"{where} ") else f"{where}: {message}"


def parse_entry(key: str, value: bytes) -> HashEntry | None:
    """The entry stored under ``key``; None (and a warning) if it cannot be read."""
    try:
        return HashEntry.model_validate_json(value)
    except ValidationError as exc:
        log.warning("skipping invalid hash list entry", extra={"key": key, "error": str(exc)})
        return None


class HashListStore:
    """Read and write the allow/block entries of one ``hashlists`` table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(
        self,
        *,
        sha256: str | None = None,
        md5: str | None = None,
        sha1: str | None = None,
        pdq: str | None = None,
        pdq_quality: int | None = None,
        list: ListName = "block",
        reason: str = "",
        author: str = "",
        category: Category = "csam",
        source: str = LOCAL,
    ) -> HashEntry:
        """Add or replace the entry for an image; returns what was stored."""
        try:
            entry = HashEntry(
                list=list,
                sha256=sha256,
                md5=md5,
                sha1=sha1,
                pdq=pdq,
                pdq_quality=pdq_quality,
                reason=reason,
                author=author,
                category=category,
                source=source,
            )
        except ValidationError as exc:
            raise HashListError(first_error(exc)) from None
        await self.put(entry)
        return entry

    async def put(self, entry: HashEntry) -> None:
        """Store ``entry`` under its key."""
        await self.table.put(entry.key, encode_entry(entry))
        log.info(
            "hash list entry stored",
            extra={
                "key": entry.key,
                "list": entry.list,
                "category": entry.category,
                "author": entry.author,
                "source": entry.source,
            },
        )

    async def delete(self, key: str) -> bool:
        """Remove the entry stored under ``key``; whether there was one."""
        if await self.table.get(key) is None:
            return False
        await self.table.delete(key)
        log.info("hash list entry removed", extra={"key": key})
        return True

    async def remove(
        self,
        *,
        sha256: str | None = None,
        md5: str | None = None,
        sha1: str | None = None,
        pdq: str | None = None,
    ) -> bool:
        """Remove the local entry of an image by one of its hashes.

        The entry keyed by that hash goes; failing that, a local entry that carries the
        hash among others (an MD5 of an entry keyed by its sha256). Feed entries are the
        feed's: they go when the feed removes them, or with ``pictguard feeds
        unsubscribe``. Returns whether something was removed.
        """
        given = {"sha256": sha256, "md5": md5, "sha1": sha1, "pdq": pdq}
        found = [(t, v) for t, v in given.items() if v]
        if not found:
            raise HashListError("remove needs a sha256, md5, sha1 or pdq")
        hash_type: HashType = found[0][0]  # type: ignore[assignment]
        value = normalize_hash(hash_type, str(found[0][1]))
        if await self.delete(base_key(hash_type, value)):
            return True
        async for entry in self.entries():
            if entry.source != LOCAL or entry.feed is not None:
                continue
            if getattr(entry, hash_type) == value:
                return await self.delete(entry.key)
        return False

    async def get(self, sha256: str) -> HashEntry | None:
        """The stored local entry for a sha256."""
        value = await self.table.get(normalize_hex(sha256, "sha256"))
        return None if value is None else parse_entry(sha256, value)

    async def get_key(self, key: str) -> HashEntry | None:
        """The entry stored under ``key``."""
        value = await self.table.get(key)
        return None if value is None or not is_entry_key(key) else parse_entry(key, value)

    async def entries(
        self,
        list: ListName | None = None,
        *,
        source: str | None = None,
        hash_type: HashType | None = None,
        pending: bool | None = False,
    ) -> AsyncIterator[HashEntry]:
        """Stored entries, optionally of one list, one source (``local``, a label, or
        ``feed:<name>``) and carrying one hash type; ``pending``: False (the default) for
        entries that match, True for those waiting for review, None for both."""
        async for key, value in self.table.items():
            if not is_entry_key(key):
                continue
            entry = parse_entry(key, value)
            if entry is None:
                continue
            if list is not None and entry.list != list:
                continue
            if source is not None and entry.source != source:
                continue
            if hash_type is not None and getattr(entry, hash_type) is None:
                continue
            if pending is not None and entry.pending != pending:
                continue
            yield entry

    # -- records that are not entries (feed subscriptions and their progress) ----------

    async def get_meta(self, name: str) -> bytes | None:
        """The ``meta:<name>`` record."""
        return await self.table.get(META_PREFIX + name)

    async def put_meta(self, name: str, value: bytes) -> None:
        await self.table.put(META_PREFIX + name, value)

    async def delete_meta(self, name: str) -> None:
        await self.table.delete(META_PREFIX + name)


def encode_entry(entry: HashEntry) -> bytes:
    """The stored form of an entry: its JSON without empty fields or defaults that say
    nothing (a local, matching entry stores neither ``source`` nor ``pending``)."""
    exclude = set()
    if entry.source == LOCAL:
        exclude.add("source")
    if not entry.pending:
        exclude.add("pending")
    return entry.model_dump_json(exclude_none=True, exclude=exclude).encode()
