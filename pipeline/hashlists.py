"""The hash-list store: allow/block entries in the ``hashlists`` table, shared by roles.

Classify matches images against these entries (``classify.hashlists.HashLists`` adds the
in-memory index); enforce and the admin flows add and remove entries (allow a false
positive, block a confirmed image). Both go through :class:`HashListStore`, so the entry
format and its key are defined once.

One entry per image, keyed by its sha256 (``pdq:<hex>`` for entries known only by PDQ, as
imported lists often are). The value is the JSON of :class:`HashEntry`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pipeline.errors import PictguardError
from pipeline.events import utcnow
from pipeline.state.table import Table

log = logging.getLogger(__name__)

ListName = Literal["allow", "block"]
Category = Literal["csam", "nsfw"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class InvalidHashError(PictguardError, ValueError):
    """A sha256 or PDQ string is not 64 hex digits."""


class HashListError(PictguardError, ValueError):
    """A hash list entry or file is invalid; the message names the line and the field."""


def normalize_hex(value: str, what: str = "hash") -> str:
    """Lowercase, strip and check a 64-hex-digit sha256 or PDQ string."""
    text = value.strip().lower()
    if not _HEX64.match(text):
        raise InvalidHashError(f"{what} must be 64 hex digits, got {value!r}")
    return text


class HashEntry(BaseModel):
    """One allow/block entry."""

    list: ListName
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = Field(None, ge=0, le=100)
    category: Category = "csam"
    reason: str = ""
    author: str = ""
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("sha256", "pdq", mode="before")
    @classmethod
    def _hex(cls, value: object) -> str | None:
        if value is None or value == "":
            return None
        return normalize_hex(str(value))

    @field_validator("pdq_quality", mode="before")
    @classmethod
    def _quality(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _some_hash(self) -> HashEntry:
        if self.sha256 is None and self.pdq is None:
            raise ValueError("an entry needs a sha256, a pdq, or both")
        return self

    @property
    def key(self) -> str:
        """The table key: the sha256, or ``pdq:<hex>`` for PDQ-only entries."""
        return self.sha256 if self.sha256 else f"pdq:{self.pdq}"


def first_error(exc: ValidationError) -> str:
    """The first validation problem, as ``field: message``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "entry"
    return f"{where}: {first['msg']}"


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
        pdq: str | None = None,
        pdq_quality: int | None = None,
        list: ListName = "block",
        reason: str = "",
        author: str = "",
        category: Category = "csam",
    ) -> HashEntry:
        """Add or replace the entry for an image; returns what was stored."""
        try:
            entry = HashEntry(
                list=list,
                sha256=sha256,
                pdq=pdq,
                pdq_quality=pdq_quality,
                reason=reason,
                author=author,
                category=category,
            )
        except ValidationError as exc:
            raise HashListError(first_error(exc)) from None
        await self.put(entry)
        return entry

    async def put(self, entry: HashEntry) -> None:
        """Store ``entry`` under its key."""
        await self.table.put(entry.key, entry.model_dump_json(exclude_none=True).encode())
        log.info(
            "hash list entry stored",
            extra={
                "key": entry.key,
                "list": entry.list,
                "category": entry.category,
                "author": entry.author,
            },
        )

    async def remove(self, *, sha256: str | None = None, pdq: str | None = None) -> bool:
        """Remove the entry of an image by sha256 (or a PDQ-only entry by PDQ).

        Returns whether something was removed.
        """
        if sha256:
            key = normalize_hex(sha256, "sha256")
        elif pdq:
            key = f"pdq:{normalize_hex(pdq, 'pdq')}"
        else:
            raise HashListError("remove needs a sha256 or a pdq")
        if await self.table.get(key) is None:
            return False
        await self.table.delete(key)
        log.info("hash list entry removed", extra={"key": key})
        return True

    async def get(self, sha256: str) -> HashEntry | None:
        """The stored entry for a sha256."""
        value = await self.table.get(normalize_hex(sha256, "sha256"))
        return None if value is None else parse_entry(sha256, value)

    async def entries(self, list: ListName | None = None) -> AsyncIterator[HashEntry]:
        """Every stored entry, optionally of one list."""
        async for key, value in self.table.items():
            entry = parse_entry(key, value)
            if entry is not None and (list is None or entry.list == list):
                yield entry
