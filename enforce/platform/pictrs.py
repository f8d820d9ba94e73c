"""pict-rs's internal API, and an index from sha256 to pict-rs hash and aliases.

A flagged object is a stored file; pict-rs knows it by its hash (sha256 of the stored
bytes ‖ size ‖ format byte, ``hex`` = 78 hex digits) and its aliases. The only way from
the bytes to the aliases is ``GET /internal/hashes``, newest first, page by page. Walking
it per action would be a full walk each time, so :class:`PictrsIndex` keeps what it read
in the state store with a persisted cursor:

- *catch-up*: from the newest hash down to the newest one of the previous walk (or, when
  that one is gone, down to its upload time) — what was uploaded since;
- *deep walk*: the first walk of an existing instance, continued page by page from a
  cursor (``next`` slug; when the hash it names was purged meanwhile, ``timestamp=`` paging
  from the last upload time read), only as far as a look-up needs, and resumed by the next.

Ordering is by upload time; ``details.created_at`` may differ slightly from the time
pict-rs orders by, so both comparisons keep a margin (reading a few entries twice is
harmless: the index is keyed by hash).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import mimetypes
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from enforce.platform.http import JsonApi, PlatformError, json_of
from enforce.platform.settings import PictrsSettings
from pipeline.state.sqlite import SqliteState

log = logging.getLogger(__name__)

SYSTEM = "pict-rs"
_CHECKPOINT = "platform.pictrs.index"
_MARGIN_NS = 60 * 1_000_000_000
_FIRST_PAGE = 20
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS platform_pictrs_hashes (
        hex TEXT PRIMARY KEY, sha256 TEXT NOT NULL, aliases TEXT NOT NULL, created_ns INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS platform_pictrs_sha ON platform_pictrs_hashes (sha256)",
)
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_rfc3339_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of pict-rs's ``created_at`` (None if absent/unreadable)."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    base, frac, zone = match.groups()
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def format_rfc3339_ns(ns: int) -> str:
    """An RFC 3339 UTC time with nanoseconds, as pict-rs's ``timestamp`` parameter takes."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def slug_hex(slug: str) -> str | None:
    """The hash hex a page slug names (URL-safe base64 of the hash bytes)."""
    try:
        return base64.urlsafe_b64decode(slug + "=" * (-len(slug) % 4)).hex()
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class HashEntry:
    """One hash of a ``/internal/hashes`` page."""

    hex: str
    aliases: tuple[str, ...]
    created_ns: int | None

    @property
    def sha256(self) -> str:
        """The sha256 of the stored bytes: the first 64 hex digits of the hash."""
        return self.hex[:64]


@dataclass(frozen=True, slots=True)
class HashPage:
    """A page of hashes, newest first, and the slug of the next (older) page."""

    hashes: list[HashEntry]
    next: str | None


@dataclass(frozen=True, slots=True)
class Imported:
    """What ``/internal/import`` did with one alias."""

    alias: str
    ok: bool
    detail: str


class PictrsClient:
    """The calls pictguard makes to pict-rs, authorised with ``X-Api-Token``."""

    def __init__(self, settings: PictrsSettings) -> None:
        assert settings.url is not None and settings.api_key is not None
        self.settings = settings
        self.api = JsonApi(
            SYSTEM,
            settings.url,
            timeout_s=settings.timeout_s,
            headers={"X-Api-Token": settings.api_key.get_secret_value()},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.api.aclose()

    def _check_auth(self, response: Any, what: str) -> None:
        if response.status_code == 401:
            raise self.api.failure(
                what,
                response,
                "check enforce.platform.pictrs.api_key against pict-rs's server.api_key",
            )

    async def hashes(
        self, *, limit: int, slug: str | None = None, timestamp_ns: int | None = None
    ) -> HashPage:
        """One page of ``GET /internal/hashes`` (from ``slug``, or older than a time)."""
        params: dict[str, Any] = {"limit": limit}
        if slug is not None:
            params["slug"] = slug
        if timestamp_ns is not None:
            params["timestamp"] = format_rfc3339_ns(timestamp_ns)
        response = await self.api.send("GET", "/internal/hashes", params=params)
        self._check_auth(response, "listing hashes")
        if response.status_code != 200:
            raise self.api.failure("listing hashes", response)
        body = json_of(response, SYSTEM, "listing hashes")
        page = body.get("page", body) if isinstance(body, dict) else None
        if not isinstance(page, dict) or not isinstance(page.get("hashes"), list):
            raise PlatformError(f"{SYSTEM} listing hashes: unexpected answer (no page.hashes)")
        entries = []
        for item in page["hashes"]:
            hex_ = str(item.get("hex", "")).lower()
            if len(hex_) < 64:
                continue
            details = item.get("details") or {}
            entries.append(
                HashEntry(
                    hex_,
                    tuple(str(a) for a in item.get("aliases") or ()),
                    parse_rfc3339_ns(details.get("created_at")),
                )
            )
        nxt = page.get("next")
        return HashPage(entries, str(nxt) if nxt else None)

    async def aliases(self, alias: str) -> list[str]:
        """Every alias of the hash behind ``alias`` (empty when the alias is unknown)."""
        response = await self.api.send("GET", "/internal/aliases", params={"alias": alias})
        self._check_auth(response, "listing aliases")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise self.api.failure("listing aliases", response)
        body = json_of(response, SYSTEM, "listing aliases")
        return [str(a) for a in body.get("aliases") or []]

    async def purge(self, alias: str) -> list[str] | None:
        """Purge the hash behind ``alias``: its aliases, or None when pict-rs has no such alias.

        pict-rs answers once the cleanup is queued; the files go shortly after.
        """
        response = await self.api.send("POST", "/internal/purge", params={"alias": alias})
        self._check_auth(response, "purge")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.api.failure(f"purge of alias {alias}", response)
        body = json_of(response, SYSTEM, "purge")
        return [str(a) for a in body.get("aliases") or [alias]]

    async def import_alias(self, alias: str, data: bytes) -> Imported:
        """``POST /internal/import`` of ``data`` under ``alias`` (the multipart file name).

        The import goes through pict-rs's external validation (pictguard's own API), so a
        flagged image not on the allowlist is refused again.
        """
        content_type = mimetypes.guess_type(alias)[0] or "application/octet-stream"
        files = [("images[]", (alias, data, content_type))]
        response = await self.api.send("POST", "/internal/import", files=files)
        self._check_auth(response, "import")
        if response.status_code in (200, 201):
            return Imported(alias, True, "re-imported")
        code = self.api.failure("import", response).code
        if code == "duplicate-alias":
            return Imported(alias, True, "alias exists already")
        if code == "failed-external-validation":
            return Imported(
                alias,
                False,
                "refused by pict-rs's external validation (allowlist the image with "
                "`pictguard allow` first, then restore)",
            )
        return Imported(alias, False, str(self.api.failure(f"import of {alias}", response)))


@dataclass(frozen=True, slots=True)
class IndexedImage:
    """What the index knows of a sha256: pict-rs's hash and its aliases (maybe stale)."""

    hex: str
    aliases: tuple[str, ...]


@dataclass(slots=True)
class _Cursor:
    top_hex: str | None = None
    top_ns: int | None = None
    deep_slug: str | None = None
    deep_hex: str | None = None
    deep_after_ns: int | None = None
    complete: bool = False
    hashes_read: int = 0

    def dump(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__slots__})

    @classmethod
    def load(cls, raw: str | None) -> _Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(**{k: data.get(k) for k in cls.__slots__ if k in data})


class PictrsIndex:
    """sha256 → pict-rs hash and aliases, kept in the state store, read incrementally."""

    def __init__(self, client: PictrsClient, state: SqliteState, *, page_size: int) -> None:
        self.client = client
        self.state = state
        self.page_size = page_size
        self._lock = asyncio.Lock()
        self._cursor = _Cursor()

    async def start(self) -> None:
        """Create the table and load the cursor."""
        for statement in _SCHEMA:
            await self.state.execute(statement)
        self._cursor = _Cursor.load(await self.state.get_checkpoint(_CHECKPOINT))

    @property
    def hashes_read(self) -> int:
        """How many hash entries all walks have read so far (for tests and status)."""
        return self._cursor.hashes_read

    async def find(self, sha256: str) -> IndexedImage | None:
        """The pict-rs hash whose stored bytes have ``sha256``; None if pict-rs has none."""
        sha256 = sha256.lower()
        async with self._lock:
            hit = await self._get(sha256)
            if hit is not None:
                return hit
            await self._catch_up()
            hit = await self._get(sha256)
            while hit is None and not self._cursor.complete:
                await self._deep_page()
                hit = await self._get(sha256)
            return hit

    async def forget(self, hex_: str) -> None:
        """Drop a purged hash."""
        await self.state.execute("DELETE FROM platform_pictrs_hashes WHERE hex = ?", (hex_,))

    async def remember(self, hex_: str, aliases: list[str]) -> None:
        """Record a hash pictguard re-imported."""
        await self._store([HashEntry(hex_, tuple(aliases), None)])

    async def _get(self, sha256: str) -> IndexedImage | None:
        row = await self.state.fetchone(
            "SELECT hex, aliases FROM platform_pictrs_hashes WHERE sha256 = ? "
            "ORDER BY created_ns DESC LIMIT 1",
            (sha256,),
        )
        return None if row is None else IndexedImage(row[0], tuple(json.loads(row[1])))

    async def _store(self, entries: list[HashEntry]) -> None:
        if not entries:
            return
        await self.state.executemany(
            "INSERT INTO platform_pictrs_hashes (hex, sha256, aliases, created_ns) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(hex) DO UPDATE SET aliases = excluded.aliases, "
            "created_ns = COALESCE(excluded.created_ns, platform_pictrs_hashes.created_ns)",
            [(e.hex, e.sha256, json.dumps(list(e.aliases)), e.created_ns) for e in entries],
        )
        self._cursor.hashes_read += len(entries)

    async def _save(self) -> None:
        await self.state.set_checkpoint(_CHECKPOINT, self._cursor.dump())

    async def _catch_up(self) -> None:
        """Read from the newest hash down to what the previous walk started from."""
        cursor = self._cursor
        fresh_index = cursor.top_hex is None
        slug: str | None = None
        first: HashEntry | None = None
        while True:
            # Usually nothing or little is new: a short first page makes a miss cheap.
            short = slug is None and not fresh_index
            limit = min(self.page_size, _FIRST_PAGE) if short else self.page_size
            page = await self.client.hashes(limit=limit, slug=slug)
            new: list[HashEntry] = []
            reached = False
            for entry in page.hashes:
                first = first or entry
                if not fresh_index and self._older_than_top(entry):
                    reached = True
                    break
                new.append(entry)
            await self._store(new)
            if fresh_index:
                # The first page starts the index; older pages are the deep walk's.
                self._set_deep(page)
                break
            if reached:
                break
            if page.next is None:
                # Read to the end without meeting the old top: everything is indexed.
                cursor.complete, cursor.deep_slug = True, None
                break
            slug = page.next
        if first is not None:
            cursor.top_hex, cursor.top_ns = first.hex, first.created_ns
        await self._save()

    def _older_than_top(self, entry: HashEntry) -> bool:
        cursor = self._cursor
        if entry.hex == cursor.top_hex:
            return True
        return (
            entry.created_ns is not None
            and cursor.top_ns is not None
            and entry.created_ns < cursor.top_ns - _MARGIN_NS
        )

    def _set_deep(self, page: HashPage) -> None:
        cursor = self._cursor
        if page.next is None:
            cursor.complete, cursor.deep_slug, cursor.deep_hex = True, None, None
            return
        cursor.deep_slug, cursor.deep_hex = page.next, slug_hex(page.next)
        last = next((e.created_ns for e in reversed(page.hashes) if e.created_ns), None)
        cursor.deep_after_ns = last if last is not None else cursor.deep_after_ns

    async def _deep_page(self) -> None:
        """One more page of the first walk, from the persisted cursor."""
        cursor = self._cursor
        page = await self.client.hashes(limit=self.page_size, slug=cursor.deep_slug)
        if page.hashes and cursor.deep_hex and page.hashes[0].hex != cursor.deep_hex:
            # The hash the cursor names is gone (purged meanwhile) and pict-rs started from
            # the newest again: continue by upload time instead.
            if cursor.deep_after_ns is not None:
                log.info("pict-rs index: cursor hash is gone, paging by upload time")
                page = await self.client.hashes(
                    limit=self.page_size, timestamp_ns=cursor.deep_after_ns + _MARGIN_NS
                )
            else:
                log.warning(
                    "pict-rs index: cursor hash is gone and pict-rs gives no upload times; "
                    "reading from the newest hash again"
                )
        await self._store(page.hashes)
        self._set_deep(page)
        await self._save()
