"""FakeHMA: a fake of Meta's Hasher-Matcher-Actioner 2.0 (OpenMediaMatch) HTTP API.

Written from ``facebook/ThreatExchange`` ``hasher-matcher-actioner`` 1.1.7 (OpenMediaMatch)
and the ``python-threatexchange`` it ships with:

- ``src/OpenMediaMatch/blueprints/matching.py`` (``/m``): ``raw_lookup`` (content ids, or
  ``{bank_content_id, distance}`` with ``include_distance``; no enabled/coin-flip checks),
  ``lookup`` GET (``signal``+``signal_type``, or ``url`` when the hasher role is on) and POST
  (multipart upload), both ``{bank_name: [{bank_content_id, distance}]}`` per signal type
  (outer level elided when ``signal_type`` is given), filtered by content
  ``disable_until_ts`` and by the bank's ``matching_enabled_ratio`` against a coin flip seeded
  by ``seed`` (``bypass_coinflip`` on POST only); ``index/status``; ``compare``.
- ``src/OpenMediaMatch/blueprints/hashing.py`` (``/h/hash`` GET by URL, POST multipart whose
  field name is the content type ``photo``/``video``).
- ``src/OpenMediaMatch/blueprints/curation.py`` (``/c``): banks (names ``UPPER_WITH_UNDERSCORE``),
  content by file/URL or by signal, content get/update/delete.
- ``src/OpenMediaMatch/utils/flask_utils.py``: errors are ``{"message": …}`` with the status
  ``abort`` gave; ``app.py``: ``/status`` (``I-AM-ALIVE`` / 503 ``INDEX-NOT-LOADED``).
- ``python-threatexchange``: ``pdq`` (64 hex digits; PDQ from Pillow pixels through
  ``pdqhash``; quality < 50 hashes to ``""``; a match is Hamming distance ≤ 31, reported as the
  distance in a string) and ``video_md5`` (exact MD5 of the bytes, distance ``"-"``); the
  reference config enables exactly these two.

HMA has no authentication of its own (deployments add it through ``APP_HOOK``); neither does
the fake. The real index is rebuilt by a background job; ``auto_index=False`` makes the fake
wait for :meth:`FakeHMA.build_index` the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from PIL import Image

from tests.fakes._server import FakeServer, json_response

PDQ_MATCH_THRESHOLD = 31
PDQ_QUALITY_THRESHOLD = 50
CONTENT_TYPES = {"photo": ("pdq",), "video": ("video_md5",)}


class HMAError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def pdq_hash(data: bytes) -> tuple[str, int]:
    """``pdq_from_bytes``: (64-hex PDQ hash, quality)."""
    import pdqhash

    with Image.open(io.BytesIO(data)) as image:
        img = image.convert("RGB") if image.mode in ("LA", "I;16") else image
        array = np.asarray(img)
    if array.ndim == 2:
        array = np.concatenate([array[..., np.newaxis]] * 3, axis=2)
    bits, quality = pdqhash.compute(array)
    value = int("".join(str(int(b)) for b in bits), 2)
    return f"{value:064x}", int(quality)


def pdq_signal(data: bytes) -> str:
    """``PdqSignal.hash_from_bytes``: the hash, or ``""`` when quality is under 50."""
    value, quality = pdq_hash(data)
    return value if quality >= PDQ_QUALITY_THRESHOLD else ""


def pdq_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def validate_signal(signal_type: str, value: str) -> str:
    """``validate_signal_str`` of ``PdqSignal`` and ``VideoMD5Signal``."""
    if signal_type == "pdq":
        if not re.fullmatch("[0-9a-f]{64}", value):
            raise ValueError("invalid PDQ hash")
        return value
    normalized = value.strip().lower()
    if not re.fullmatch("[0-9a-f]{32}", normalized):
        raise ValueError(f"{value!r} is not a valid MD5 hash")
    return normalized


@dataclass
class Bank:
    name: str
    matching_enabled_ratio: float = 1.0

    def json(self) -> dict[str, Any]:
        return {"matching_enabled_ratio": self.matching_enabled_ratio, "name": self.name}


@dataclass
class BankContent:
    id: int
    bank: str
    signals: dict[str, str]
    added_at: int
    disable_until_ts: int = 1
    note: str | None = None
    user_metadata: dict[str, Any] | None = None
    original_media_uri: str | None = None

    @property
    def enabled(self) -> bool:
        if self.disable_until_ts == 0:
            return False
        if self.disable_until_ts == 1:
            return True
        return self.disable_until_ts <= time.time()


@dataclass
class _Index:
    entries: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    built_to: dict[str, int] = field(default_factory=dict)


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeHMA(FakeServer):
    """A fake HMA 2.0 with the hasher, matcher and curator roles.

    ``auto_index``: rebuild the match index on every bank change (the real one catches up
    within about a minute); with ``False`` nothing matches until :meth:`build_index`, and
    lookups answer 503 ``index not yet ready`` before the first build.
    ``role_hasher``: ``ROLE_HASHER`` (URL and file lookups need it).
    """

    def __init__(
        self,
        *,
        auto_index: bool = True,
        role_hasher: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.auto_index = auto_index
        self.role_hasher = role_hasher
        self.banks: dict[str, Bank] = {}
        self.contents: dict[int, BankContent] = {}
        self._index: _Index | None = _Index() if auto_index else None
        self._next_id = 1

    # --- seeding / inspection ------------------------------------------------------------------

    def add_bank(self, name: str, matching_enabled_ratio: float = 1.0) -> None:
        with self._lock:
            self._create_bank(name, matching_enabled_ratio)

    def add_signal(
        self, bank: str, signal_type: str, value: str, *, note: str | None = None
    ) -> int:
        """Bank one hash (``pdq`` or ``video_md5``); returns the bank content id."""
        with self._lock:
            return self._add_content(bank, {signal_type: validate_signal(signal_type, value)}, note)

    def add_image(self, bank: str, data: bytes) -> int:
        """Bank an image by its PDQ hash, as ``POST /c/bank/<bank>/content`` with a photo."""
        return self.add_signal(bank, "pdq", pdq_signal(data))

    def build_index(self) -> None:
        """What HMA's indexer and index-cache refresh do: make current bank content matchable."""
        with self._lock:
            self._rebuild()

    # --- internals -------------------------------------------------------------------------------

    def _create_bank(self, name: str, ratio: float) -> Bank:
        if not re.fullmatch("[A-Z_][A-Z0-9_]*", name):
            raise HMAError(400, "Bank names must be UPPER_WITH_UNDERSCORE")
        if name in self.banks:
            raise HMAError(403, "Bank already exists")
        bank = Bank(name, ratio)
        self.banks[name] = bank
        return bank

    def _add_content(
        self,
        bank: str,
        signals: dict[str, str],
        note: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        if bank not in self.banks:
            raise HMAError(404, f"bank '{bank}' not found")
        cid = self._next_id
        self._next_id += 1
        self.contents[cid] = BankContent(
            cid, bank, signals, int(time.time()), note=note, user_metadata=metadata
        )
        if self.auto_index:
            self._rebuild()
        return cid

    def _rebuild(self) -> None:
        index = _Index()
        for content in sorted(self.contents.values(), key=lambda c: c.id):
            for signal_type, value in content.signals.items():
                index.entries.setdefault(signal_type, []).append((value, content.id))
                index.built_to[signal_type] = max(
                    index.built_to.get(signal_type, -1), content.added_at
                )
        self._index = index

    def _query(self, signal: str, signal_type: str) -> list[tuple[int, str]]:
        """``query_index``: (content id, distance string) for every match."""
        if signal_type not in ("pdq", "video_md5"):
            raise HMAError(400, f"No such SignalType '{signal_type}'")
        try:
            signal = validate_signal(signal_type, signal)
        except ValueError as exc:
            raise HMAError(400, f"invalid signal: {exc}") from exc
        if self._index is None:
            raise HMAError(503, "index not yet ready")
        hits: list[tuple[int, str]] = []
        for value, cid in self._index.entries.get(signal_type, []):
            if signal_type == "pdq":
                distance = pdq_distance(signal, value)
                if distance <= PDQ_MATCH_THRESHOLD:
                    hits.append((cid, str(distance)))
            elif value == signal:
                hits.append((cid, "-"))
        return hits

    def _lookup(
        self,
        signal: str,
        signal_type: str,
        seed: str | None,
        bypass_coinflip: bool = False,
        banks: set[str] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        hits = dict(self._query(signal, signal_type))
        contents = [self.contents[cid] for cid in hits if cid in self.contents]
        enabled = [c for c in contents if c.enabled]
        coinflip = random.Random(seed).random() if not bypass_coinflip else 0
        enabled_banks = {
            c.bank for c in enabled if self.banks[c.bank].matching_enabled_ratio >= coinflip
        }
        if banks is not None:
            enabled_banks &= banks
        result: dict[str, list[dict[str, Any]]] = {}
        for content in enabled:
            if content.bank in enabled_banks:
                match = {"bank_content_id": content.id, "distance": hits[content.id]}
                result.setdefault(content.bank, []).append(match)
        return result

    @staticmethod
    def _hash_bytes(data: bytes, content_type: str, types: str | None) -> dict[str, str]:
        wanted: tuple[str, ...] = CONTENT_TYPES[content_type]
        if types is not None:
            selected = [t.strip() for t in types.split(",") if t.strip()]
            for name in selected:
                if name not in wanted:
                    raise HMAError(400, f"signal type '{name}' doesn't exist or is disabled")
            if not selected:
                raise HMAError(400, "empty signal type selection")
            wanted = tuple(selected)
        out: dict[str, str] = {}
        for signal_type in wanted:
            if signal_type == "pdq":
                try:
                    out["pdq"] = pdq_signal(data)
                except Exception as exc:
                    raise HMAError(500, f"could not decode image: {exc}") from exc
            else:
                out[signal_type] = hashlib.md5(data).hexdigest()
        return out

    async def _hash_form(self, request: web.Request) -> dict[str, str]:
        """``hash_media_from_form_data``: one file whose field name is the content type."""
        if not request.content_type.startswith("multipart/"):
            raise HMAError(400, "Missing multipart/form-data file upload")
        reader = await request.multipart()
        files: list[tuple[str, bytes]] = []
        while (part := await reader.next()) is not None:
            if isinstance(part, aiohttp.BodyPartReader) and part.filename is not None:
                files.append((part.name or "", bytes(await part.read())))
        if not files:
            raise HMAError(400, "Missing multipart/form-data file upload")
        if len(files) > 1:
            raise HMAError(400, "Only one file allowed per request")
        name, data = files[0]
        if name not in CONTENT_TYPES:
            raise HMAError(400, f"no such content_type: '{name}'")
        return self._hash_bytes(data, name, request.query.get("types"))

    async def _hash_url(
        self, url: str, content_type: str | None, types: str | None
    ) -> dict[str, str]:
        """``hash_url_content``: fetch, pick the content type from the response, hash."""
        if not re.match(r"^https?://[^/:]+(:\d+)?(/|$)", url):
            raise HMAError(400, "Invalid or unsafe URL provided")
        try:
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                response.raise_for_status()
                header = response.headers.get("Content-Type", "")
                data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HMAError(400, f"Failed to fetch URL: {exc}") from exc
        if content_type is None:
            if header.lower().startswith("image"):
                content_type = "photo"
            elif header.lower().startswith("video"):
                content_type = "video"
            else:
                raise HMAError(
                    400,
                    f"unsupported url ContentType: '{header}', if you know the expected type, "
                    "provide it with the content_type query param",
                )
        if content_type not in CONTENT_TYPES:
            raise HMAError(400, f"no such content_type: '{content_type}'")
        return self._hash_bytes(data, content_type, types)

    # --- app -------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        routes: list[tuple[str, str, Route]] = [
            ("GET", "/status", self._status),
            ("GET", "/status/live", self._status_live),
            ("GET", "/m/raw_lookup", self._raw_lookup),
            ("GET", "/m/lookup", self._lookup_get),
            ("POST", "/m/lookup", self._lookup_post),
            ("GET", "/m/index/status", self._index_status),
            ("POST", "/m/compare", self._compare),
            ("GET", "/h/hash", self._hash_get),
            ("POST", "/h/hash", self._hash_post),
            ("GET", "/c/banks", self._banks_index),
            ("POST", "/c/banks", self._bank_create),
            ("GET", "/c/bank/{bank}", self._bank_show),
            ("PUT", "/c/bank/{bank}", self._bank_update),
            ("DELETE", "/c/bank/{bank}", self._bank_delete),
            ("POST", "/c/bank/{bank}/content", self._bank_add_content),
            ("POST", "/c/bank/{bank}/signal", self._bank_add_signal),
            ("GET", r"/c/bank/{bank}/content/{id:\d+}", self._content_get),
            ("PUT", r"/c/bank/{bank}/content/{id:\d+}", self._content_update),
            ("DELETE", r"/c/bank/{bank}/content/{id:\d+}", self._content_delete),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._guard(handler))
        return app

    def _guard(self, handler: Route) -> Route:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except HMAError as exc:
                return json_response({"message": exc.message}, status=exc.status)

        return run

    @staticmethod
    def _required(request: web.Request, *names: str) -> None:
        """flask-openapi3's query validation: 422 with pydantic's error list."""
        missing = [n for n in names if n not in request.query]
        if missing:
            errors = [{"type": "missing", "loc": [n], "msg": "Field required"} for n in missing]
            raise _Unprocessable(errors)

    @staticmethod
    def _flag(value: str | None) -> bool:
        return (value or "").lower() in ("1", "true", "yes", "on", "y", "t")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if self._index is None:
            return web.Response(status=503, text="INDEX-NOT-LOADED")
        return web.Response(text="I-AM-ALIVE")

    async def _status_live(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="I-AM-ALIVE")

    async def _raw_lookup(self, request: web.Request) -> web.StreamResponse:
        try:
            self._required(request, "signal", "signal_type")
        except _Unprocessable as exc:
            return json_response(exc.errors, status=422)
        q = request.query
        banks = set(q["banks"].split(",")) if q.get("banks") else None
        with self._lock:
            hits = self._query(q["signal"], q["signal_type"])
            if banks is not None:
                hits = [
                    (cid, d)
                    for cid, d in hits
                    if cid in self.contents and self.contents[cid].bank in banks
                ]
        if self._flag(q.get("include_distance")):
            return json_response(
                {"matches": [{"bank_content_id": c, "distance": d} for c, d in hits]}
            )
        return json_response({"matches": [c for c, _ in hits]})

    async def _lookup_get(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        banks = set(q["banks"].split(",")) if q.get("banks") else None
        if q.get("url"):
            if not self.role_hasher:
                raise HMAError(403, "Hashing is disabled, missing role")
            hashes = await self._hash_url(q["url"], q.get("content_type"), q.get("types"))
            with self._lock:
                resp = {
                    st: self._lookup(sig, st, q.get("seed"), banks=banks)
                    for st, sig in hashes.items()
                }
            if q.get("signal_type"):
                return json_response(resp.get(q["signal_type"], {}))
            return json_response(resp)
        if not q.get("signal") or not q.get("signal_type"):
            raise HMAError(400, "Either url or both signal and signal_type are required")
        with self._lock:
            return json_response(
                self._lookup(q["signal"], q["signal_type"], q.get("seed"), banks=banks)
            )

    async def _lookup_post(self, request: web.Request) -> web.StreamResponse:
        if not self.role_hasher:
            raise HMAError(403, "Hashing is disabled, missing role")
        hashes = await self._hash_form(request)
        q = request.query
        bypass = q.get("bypass_coinflip", "false") == "true"
        banks = set(q["banks"].split(",")) if q.get("banks") else None
        with self._lock:
            resp = {
                st: self._lookup(sig, st, q.get("seed"), bypass, banks)
                for st, sig in hashes.items()
            }
        return json_response(resp)

    async def _index_status(self, request: web.Request) -> web.StreamResponse:
        only = request.query.get("signal_type")
        names = ["pdq", "video_md5"]
        if only is not None:
            if only not in names:
                raise HMAError(400, f"No such signal type '{only}'")
            names = [only]
        with self._lock:
            out = {}
            for name in names:
                if self._index is None or name not in self._index.built_to:
                    out[name] = {"built_to": -1, "present": False, "size": 0}
                else:
                    size = len(self._index.entries.get(name, []))
                    out[name] = {
                        "built_to": self._index.built_to[name],
                        "present": True,
                        "size": size,
                    }
        return json_response(out)

    async def _compare(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise HMAError(400, "Request input was not a dict") from exc
        if not isinstance(body, dict):
            raise HMAError(400, "Request input was not a dict")
        results: dict[str, Any] = {}
        for signal_type, pair in body.items():
            if not isinstance(pair, list):
                raise HMAError(400, f"Comparison hashes for {signal_type} was not a list")
            if len(pair) != 2:
                raise HMAError(400, "Comparison hash list length must be exactly 2")
            if signal_type not in ("pdq", "video_md5"):
                raise HMAError(400, f"No such SignalType '{signal_type}'")
            try:
                left, right = (validate_signal(signal_type, str(v)) for v in pair)
            except ValueError as exc:
                raise HMAError(400, f"Invalid {signal_type} hash: {exc}") from exc
            if signal_type == "pdq":
                distance = pdq_distance(left, right)
                results[signal_type] = [distance <= PDQ_MATCH_THRESHOLD, {"distance": distance}]
            else:
                results[signal_type] = [left == right, {}]
        return json_response(results)

    async def _hash_get(self, request: web.Request) -> web.StreamResponse:
        try:
            self._required(request, "url")
        except _Unprocessable as exc:
            return json_response(exc.errors, status=422)
        q = request.query
        return json_response(await self._hash_url(q["url"], q.get("content_type"), q.get("types")))

    async def _hash_post(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self._hash_form(request))

    async def _banks_index(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return json_response([b.json() for b in self.banks.values()])

    async def _bank_create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ratio = body.get("enabled_ratio")
        if ratio is None:
            ratio = (1.0 if body["enabled"] else 0.0) if body.get("enabled") is not None else 1.0
        with self._lock:
            return json_response(
                self._create_bank(str(body["name"]), float(ratio)).json(), status=201
            )

    def _bank(self, request: web.Request) -> Bank:
        name = request.match_info["bank"]
        bank = self.banks.get(name)
        if bank is None:
            raise HMAError(404, f"bank '{name}' not found")
        return bank

    async def _bank_show(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return json_response(self._bank(request).json())

    async def _bank_update(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            bank = self.banks.get(request.match_info["bank"])
            if bank is None:
                raise HMAError(404, "Bank not found")
            if body.get("name") is not None and body["name"] != bank.name:
                if not re.fullmatch("[A-Z_][A-Z0-9_]*", body["name"]):
                    raise HMAError(400, "Bank names must be UPPER_WITH_UNDERSCORE")
                if body["name"] in self.banks:
                    raise HMAError(403, "Bank name already exists")
                del self.banks[bank.name]
                for content in self.contents.values():
                    if content.bank == bank.name:
                        content.bank = body["name"]
                bank.name = body["name"]
                self.banks[bank.name] = bank
            if body.get("enabled") is not None:
                bank.matching_enabled_ratio = 1 if body["enabled"] else 0
            if body.get("enabled_ratio") is not None:
                bank.matching_enabled_ratio = float(body["enabled_ratio"])
            return json_response(bank.json())

    async def _bank_delete(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["bank"]
        with self._lock:
            self.banks.pop(name, None)
            for cid in [c.id for c in self.contents.values() if c.bank == name]:
                del self.contents[cid]
            if self.auto_index:
                self._rebuild()
        return json_response({"message": "Done"})

    async def _bank_add_content(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._bank(request)
        note: str | None = None
        metadata: dict[str, Any] | None = None
        if request.query.get("url"):
            q = request.query
            hashes = await self._hash_url(q["url"], q.get("content_type"), q.get("types"))
            if request.content_type == "application/json":
                body = await request.json()
                note, metadata = body.get("note"), body.get("metadata")
        elif request.content_type.startswith("multipart/"):
            hashes = await self._hash_form(request)
        else:
            raise HMAError(400, "Neither `url` nor multipart file upload was received")
        return json_response(self._add_signals(request.match_info["bank"], hashes, note, metadata))

    async def _bank_add_signal(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._bank(request)
        body = dict(await request.json())
        note = body.pop("note", None)
        return json_response(self._add_signals(request.match_info["bank"], body, note, None))

    def _add_signals(
        self, bank: str, signals: dict[str, Any], note: str | None, metadata: dict[str, Any] | None
    ) -> dict[str, Any]:
        """``_bank_add_signals``: validate every signal, then bank them as one content."""
        if not signals:
            raise HMAError(400, "No signals given")
        if note is not None and (not isinstance(note, str) or len(note) > 255):
            raise HMAError(400, "note must be at most 255 characters")
        valid: dict[str, str] = {}
        for name, value in signals.items():
            if name not in ("pdq", "video_md5"):
                raise HMAError(400, f"No such signal type {name}")
            try:
                valid[name] = validate_signal(name, str(value))
            except ValueError as exc:
                raise HMAError(400, f"Invalid {name} signal: {exc}") from exc
        with self._lock:
            cid = self._add_content(bank, valid, note or None, metadata)
        return {"id": cid, "signals": valid}

    def _content(self, request: web.Request) -> BankContent:
        self._bank(request)
        content = self.contents.get(int(request.match_info["id"]))
        if content is None:
            raise HMAError(404, f"content '{request.match_info['id']}' not found")
        return content

    async def _content_get(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            content = self._content(request)
            bank = self.banks[content.bank]
            body: dict[str, Any] = {
                "bank": bank.json(),
                "disable_until_ts": content.disable_until_ts,
                "id": content.id,
                "original_media_uri": content.original_media_uri,
            }
            if request.query.get("include_signals", "false").lower() == "true":
                body["signals"] = dict(content.signals)
            if (
                request.query.get("include_metadata", "true").lower() == "true"
                and content.user_metadata
            ):
                body["metadata"] = dict(content.user_metadata)
            if content.note is not None:
                body["note"] = content.note
            return json_response(body)

    async def _content_update(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            content = self._content(request)
            if "disable_until_ts" in body:
                value = int(body["disable_until_ts"])
                if value < 0:
                    raise HMAError(400, "disable_until_ts must be a non-negative integer")
                if value > time.time() + 5 * 365 * 24 * 3600:
                    raise HMAError(400, "disable_until_ts must be less than 5 years in the future")
                content.disable_until_ts = value
            if "note" in body:
                content.note = body["note"] or None
            return json_response(
                {
                    "bank": self.banks[content.bank].json(),
                    "collab_metadata": {},
                    "disable_until_ts": content.disable_until_ts,
                    "id": content.id,
                    "note": content.note,
                    "original_media_uri": content.original_media_uri,
                    "user_metadata": content.user_metadata,
                }
            )

    async def _content_delete(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._bank(request)
            removed = self.contents.pop(int(request.match_info["id"]), None)
            if removed is not None and self.auto_index:
                self._rebuild()
        return json_response({"deleted": 1 if removed else 0})


class _Unprocessable(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("validation failed")
        self.errors = errors
