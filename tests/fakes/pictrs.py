"""FakePictrs: a fake of pict-rs 0.5's HTTP API, for tests that cannot run the real server.

Written from pict-rs's own source (the ``robinst/pict-rs`` mirror of
``git.asonix.dog/asonix/pict-rs`` at v0.5.17-pre.2, June 2024; the 0.5.7+ storage layout and
the 0.5 API did not change after it):

- ``src/lib.rs``: routes, upload/import/backgrounded/claim handlers, ``page``
  (``/internal/hashes``), ``purge``, ``delete_alias``, ``aliases``, ``identifier``,
  ``prune_missing``, ``set_not_found``, the serving headers, and ``build_client``
  (User-Agent ``pict-rs v0.5.0-main``, the same for every 0.5.x release).
- ``src/ingest.rs``: store first, then POST the stored bytes to ``media.external_validation``
  (streamed, ``Content-Type`` = the kept file's media type, timeout
  ``external_validation_timeout``, default 30 s); non-2xx → ``FailedExternalValidation``; the
  dropped session removes the stored file; a duplicate hash removes the new copy and reuses
  the old one.
- ``src/error.rs``, ``src/error_code.rs``: status codes and ``{"msg", "code"}`` bodies
  (``failed-external-validation`` → 400, request errors → 500 ``http-client-error``).
- ``src/middleware/internal.rs``: ``X-Api-Token`` check → 401
  ``{"msg":"Invalid API Key","code":"invalid-api-token"}`` (also when no api key is configured).
- ``src/repo/hash.rs``, ``src/formats.rs``: hash = sha256 ‖ size (6 bytes BE) ‖ format byte.
- ``src/repo.rs``, ``src/repo/sled.rs``: hash pages, newest first, ``next``/``prev``/``current``
  slugs = URL-safe base64 of the 39 hash bytes.
- ``src/file_path.rs``, ``src/store/*.rs``: identifiers are a UUIDv7's 32 hex digits split
  into ten 2-digit directories and a 12-digit file name plus the extension (≥ 0.5.7).
- ``src/queue/cleanup.rs``: purge removes every alias, every variant and the original file.

What the fake leaves out is listed in ``docs/fakes.md`` (no media processing: files are kept
as uploaded; cleanup runs inline, where pict-rs queues it; no proxy/download endpoints).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from PIL import Image

from tests.fakes._server import FakeServer, json_response

PICTRS_USER_AGENT = "pict-rs v0.5.0-main"
"""What pict-rs 0.5.x sends as User-Agent on every outgoing request (``build_client``)."""

MEGABYTES = 1024 * 1024
CHUNK = 64 * 1024


# --- formats (src/formats.rs and formats/*.rs) -----------------------------------------


@dataclass(frozen=True)
class InternalFormat:
    """One of pict-rs's kept formats: its kind, hash byte, extension and media type."""

    kind: str  # "Image" | "Animation" | "Video" (ApiDetails.format)
    byte: int
    extension: str
    media_type: str


FORMATS: dict[str, InternalFormat] = {
    "apng": InternalFormat("Animation", 0, ".apng", "image/apng"),
    "animated_avif": InternalFormat("Animation", 1, ".avif", "image/avif"),
    "gif": InternalFormat("Animation", 2, ".gif", "image/gif"),
    "animated_webp": InternalFormat("Animation", 3, ".webp", "image/webp"),
    "avif": InternalFormat("Image", 4, ".avif", "image/avif"),
    "jpeg": InternalFormat("Image", 5, ".jpeg", "image/jpeg"),
    "jxl": InternalFormat("Image", 6, ".jxl", "image/jxl"),
    "png": InternalFormat("Image", 7, ".png", "image/png"),
    "webp": InternalFormat("Image", 8, ".webp", "image/webp"),
    "mp4": InternalFormat("Video", 9, ".mp4", "video/mp4"),
    "webm": InternalFormat("Video", 10, ".webm", "video/webm"),
}

# process.{ext} names (InputProcessableFormat::from_str) → Pillow save format, kept format
PROCESS_FORMATS: dict[str, tuple[str, str]] = {
    "apng": ("PNG", "apng"),
    "avif": ("AVIF", "avif"),
    "gif": ("GIF", "gif"),
    "jpeg": ("JPEG", "jpeg"),
    "jpg": ("JPEG", "jpeg"),
    "jxl": ("JXL", "jxl"),
    "png": ("PNG", "png"),
    "webp": ("WEBP", "webp"),
}


class MediaError(Exception):
    """Media pict-rs would refuse; carries pict-rs's status, message and code."""

    def __init__(self, status: int, msg: str, code: str) -> None:
        super().__init__(msg)
        self.status, self.msg, self.code = status, msg, code


@dataclass
class Details:
    """pict-rs's ``Details`` (served as ``ApiDetails``)."""

    width: int
    height: int
    frames: int | None
    content_type: str
    created_at: str
    format: str

    def api(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "content_type": self.content_type,
            "created_at": self.created_at,
            "format": self.format,
        }


def rfc3339_ns(ns: int) -> str:
    """``time::serde::rfc3339`` output: UTC, nanoseconds with trailing zeros trimmed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def detect_media(data: bytes) -> tuple[InternalFormat, int, int, int | None]:
    """The kept format, width, height and frame count of ``data``, as pict-rs's discovery
    would classify it (Pillow for images, PyAV for video)."""
    if not data:
        raise MediaError(400, "Uploaded file is empty", "validate-file-empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            frames = int(getattr(img, "n_frames", 1))
            animated = frames > 1
            name = {
                "JPEG": "jpeg",
                "PNG": "apng" if animated else "png",
                "GIF": "gif",
                "WEBP": "animated_webp" if animated else "webp",
                "AVIF": "animated_avif" if animated else "avif",
                "JXL": "jxl",
            }.get(img.format or "")
            if name is None:
                raise MediaError(
                    400, f"Input file type {img.format} is unsupported", "command-error"
                )
            fmt = FORMATS[name]
            img.load()
            return fmt, img.width, img.height, frames if fmt.kind == "Animation" else None
    except MediaError:
        raise
    except Exception:  # noqa: BLE001 - not an image; maybe a video
        pass
    try:
        import av

        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            names = container.format.name
            name = "webm" if "webm" in names or "matroska" in names else "mp4"
            video_frames = int(stream.frames or 0) or None
            return FORMATS[name], int(stream.width), int(stream.height), video_frames
    except Exception as exc:
        raise MediaError(400, "Invalid media file provided", "command-failure") from exc


def pictrs_hash(data: bytes, fmt: InternalFormat) -> bytes:
    """``Hash::to_bytes``: sha256 (32) ‖ size as 6 big-endian bytes ‖ format byte."""
    return hashlib.sha256(data).digest() + len(data).to_bytes(8, "big")[2:] + bytes([fmt.byte])


def hash_slug(hash_bytes: bytes) -> str:
    """``hash_to_slug``: URL-safe base64 (with padding) of the 39 hash bytes."""
    return base64.urlsafe_b64encode(hash_bytes).decode()


def _uuid7_hex() -> str:
    """A UUIDv7 in ``simple`` form (Python 3.11 has no uuid7)."""
    value = (time.time_ns() // 1_000_000) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"{value:032x}"


def new_identifier(extension: str | None) -> str:
    """``file_path::generate``: ten 2-hex directories and a 12-hex name, plus the extension."""
    s = _uuid7_hex()
    dirs = [s[i * 2 : i * 2 + 2] for i in range(10)]
    return "/".join(dirs) + "/" + s[20:] + (extension or "")


# --- stores ------------------------------------------------------------------------------


class PictrsStore(Protocol):
    """Where FakePictrs keeps media: pict-rs's filesystem store or its object store."""

    def save(self, data: bytes, content_type: str, extension: str | None) -> str: ...
    def read(self, identifier: str) -> bytes: ...
    def remove(self, identifier: str) -> None: ...
    def exists(self, identifier: str) -> bool: ...
    def identifiers(self) -> set[str]: ...
    def health_check(self) -> None: ...


class FilesystemStore:
    """pict-rs's ``FileStore``: identifiers are paths under ``root`` (pict-rs's ``files`` dir);
    removing a file also removes directories it leaves empty."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, data: bytes, content_type: str, extension: str | None) -> str:
        identifier = new_identifier(extension)
        path = self.root / identifier
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return identifier

    def read(self, identifier: str) -> bytes:
        return (self.root / identifier).read_bytes()

    def remove(self, identifier: str) -> None:
        path = self.root / identifier
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def exists(self, identifier: str) -> bool:
        return (self.root / identifier).is_file()

    def identifiers(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def health_check(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(self.root)


class S3Store:
    """pict-rs's ``ObjectStore``: identifiers are object keys at the bucket root, written with
    the media type as ``Content-Type``. ``/healthz`` writes an empty ``health-check`` object at
    the bucket root, as pict-rs does."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str = "testing",
        secret_key: str = "testing",
        region: str = "us-east-1",
    ) -> None:
        import boto3

        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )

    def save(self, data: bytes, content_type: str, extension: str | None) -> str:
        identifier = new_identifier(extension)
        self.client.put_object(
            Bucket=self.bucket, Key=identifier, Body=data, ContentType=content_type
        )
        return identifier

    def read(self, identifier: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=identifier)["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(identifier) from exc
        return body

    def remove(self, identifier: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=identifier)

    def exists(self, identifier: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=identifier)
        except Exception:  # noqa: BLE001 - botocore raises ClientError(404)
            return False
        return True

    def identifiers(self) -> set[str]:
        keys: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            keys.update(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def health_check(self) -> None:
        self.client.put_object(Bucket=self.bucket, Key="health-check", Body=b"")


# --- repository ----------------------------------------------------------------------------


@dataclass
class HashEntry:
    hash: bytes
    identifier: str
    details: Details
    created_ns: int
    variants: dict[str, str] = field(default_factory=dict)  # variant path → identifier

    @property
    def hex(self) -> str:
        return self.hash.hex()


@dataclass
class AliasEntry:
    alias: str
    delete_token: str
    hash: bytes


@dataclass(frozen=True)
class UploadedFile:
    """What an upload produced: the alias, its delete token, the pict-rs hash (hex) and the
    storage identifier."""

    alias: str
    delete_token: str
    hash_hex: str
    identifier: str
    details: dict[str, Any]


@dataclass(frozen=True)
class ValidationCall:
    """One call FakePictrs made to the external validation URL, and how it ended."""

    url: str
    content_type: str
    user_agent: str
    size: int
    status: int | None
    error: str | None


@dataclass
class _Backgrounded:
    result: dict[str, Any] | None = None
    status: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    claimed: bool = False


def _error(status: int, msg: str, code: str) -> web.Response:
    return json_response({"msg": msg, "code": code}, status=status)


_ALIAS_QUERY_ERROR = "data did not match any variant of untagged enum AliasQuery"
_FILE_FIELD = re.compile(r"^images(\[\d*\])?$")


class FakePictrs(FakeServer):
    """A fake pict-rs 0.5 on a loopback port.

    ``store`` is a :class:`FilesystemStore` or an :class:`S3Store`. ``api_key`` is pict-rs's
    ``server.api_key`` (``None``: every ``/internal`` call answers 401, as in pict-rs).
    ``external_validation`` is ``media.external_validation`` (a URL or ``None``);
    ``external_validation_timeout`` is in seconds (pict-rs's default is 30).
    """

    def __init__(
        self,
        store: PictrsStore,
        *,
        api_key: str | None = "fake-pictrs-api-key",
        external_validation: str | None = None,
        external_validation_timeout: float = 30.0,
        max_file_size_mb: int = 40,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.store = store
        self.api_key = api_key
        self.external_validation = external_validation
        self.external_validation_timeout = external_validation_timeout
        self.max_file_size_mb = max_file_size_mb
        self.validation_calls: list[ValidationCall] = []
        self._hashes: dict[bytes, HashEntry] = {}
        self._aliases: dict[str, AliasEntry] = {}
        self._uploads: dict[str, _Backgrounded] = {}
        self._kv: dict[str, Any] = {}
        self._not_found_alias: str | None = None

    # --- seeding and inspection (test thread) ------------------------------------------

    def seed(
        self, data: bytes, *, alias: str | None = None, created_ns: int | None = None
    ) -> UploadedFile:
        """Store ``data`` as an upload would, without external validation."""
        fmt, width, height, frames = detect_media(data)
        with self._lock:
            return self._commit(data, fmt, width, height, frames, alias, created_ns)

    def aliases(self) -> list[str]:
        with self._lock:
            return sorted(self._aliases)

    def hash_of(self, alias: str) -> str | None:
        """The pict-rs hash (hex, 78 digits) behind ``alias``."""
        with self._lock:
            entry = self._aliases.get(alias)
            return entry.hash.hex() if entry else None

    def identifier_of(self, alias: str) -> str | None:
        with self._lock:
            entry = self._aliases.get(alias)
            return self._hashes[entry.hash].identifier if entry else None

    def variants_of(self, alias: str) -> dict[str, str]:
        """Variant path (e.g. ``thumbnail/256/webp``) → storage identifier."""
        with self._lock:
            entry = self._aliases.get(alias)
            return dict(self._hashes[entry.hash].variants) if entry else {}

    def delete_token_of(self, alias: str) -> str | None:
        with self._lock:
            entry = self._aliases.get(alias)
            return entry.delete_token if entry else None

    def stored_identifiers(self) -> set[str]:
        """What is in the backing store right now (files or object keys)."""
        return self.store.identifiers()

    def hash_count(self) -> int:
        with self._lock:
            return len(self._hashes)

    def add_variant(
        self, alias: str, variant: str = "thumbnail/256/webp", data: bytes | None = None
    ) -> str:
        """Store a variant of ``alias``'s media as pict-rs's process endpoint would (same
        layout, same store) and return its identifier. Without ``data``, a thumbnail is made."""
        ext = variant.rsplit("/", 1)[-1]
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None:
                raise KeyError(alias)
            original = self.store.read(self._hashes[entry.hash].identifier)
        if data is None:
            data = _render(original, ext, thumbnail=256)
        fmt = FORMATS[PROCESS_FORMATS.get(ext, ("", "png"))[1]]
        identifier = self.store.save(data, fmt.media_type, fmt.extension)
        with self._lock:
            self._hashes[entry.hash].variants[variant] = identifier
        return identifier

    # --- core operations (fake's loop; cheap and synchronous under the lock) --------------

    def _commit(
        self,
        data: bytes,
        fmt: InternalFormat,
        width: int,
        height: int,
        frames: int | None,
        alias: str | None,
        created_ns: int | None,
        identifier: str | None = None,
    ) -> UploadedFile:
        """Save (unless already saved), dedupe by hash, create the alias (``ingest::ingest``
        after validation)."""
        if alias is not None and alias in self._aliases:
            if identifier:
                self.store.remove(identifier)
            raise MediaError(
                400, "Tried to save an image with an already-taken name", "duplicate-alias"
            )
        if identifier is None:
            identifier = self.store.save(data, fmt.media_type, fmt.extension)
        digest = pictrs_hash(data, fmt)
        ns = created_ns if created_ns is not None else time.time_ns()
        entry = self._hashes.get(digest)
        if entry is None:
            details = Details(width, height, frames, fmt.media_type, rfc3339_ns(ns), fmt.kind)
            entry = HashEntry(digest, identifier, details, ns)
            self._hashes[digest] = entry
        else:  # duplicate upload: pict-rs removes the new copy and links to the old one
            self.store.remove(identifier)
        alias = alias or f"{uuid.uuid4()}{fmt.extension}"
        token = str(uuid.uuid4())
        self._aliases[alias] = AliasEntry(alias, token, digest)
        return UploadedFile(alias, token, entry.hex, entry.identifier, entry.details.api())

    def _cleanup_hash(self, digest: bytes) -> None:
        """``queue::cleanup::hash``: every alias, variant and the original file."""
        for alias in [a for a, e in self._aliases.items() if e.hash == digest]:
            del self._aliases[alias]
        entry = self._hashes.pop(digest, None)
        if entry is None:
            return
        for identifier in [*entry.variants.values(), entry.identifier]:
            with contextlib.suppress(Exception):
                self.store.remove(identifier)

    def _cleanup_alias(self, alias: str) -> None:
        entry = self._aliases.pop(alias)
        if not any(e.hash == entry.hash for e in self._aliases.values()):
            self._cleanup_hash(entry.hash)

    def _aliases_for(self, digest: bytes) -> list[str]:
        return sorted(a for a, e in self._aliases.items() if e.hash == digest)

    # --- external validation ---------------------------------------------------------------

    async def _validate(self, identifier: str, fmt: InternalFormat) -> None:
        url = self.external_validation
        if url is None:
            return
        data = await asyncio.to_thread(self.store.read, identifier)

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]

        headers = {"Content-Type": fmt.media_type, "User-Agent": PICTRS_USER_AGENT}
        timeout = aiohttp.ClientTimeout(total=self.external_validation_timeout)
        status: int | None = None
        error: str | None = None
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=timeout, skip_auto_headers=("User-Agent",)
                ) as session,
                session.post(url, data=body(), headers=headers, chunked=True) as response,
            ):
                status = response.status
        except TimeoutError:
            error = "operation timed out"
        except aiohttp.ClientError as exc:
            error = str(exc) or type(exc).__name__
        with self._lock:
            self.validation_calls.append(
                ValidationCall(url, fmt.media_type, PICTRS_USER_AGENT, len(data), status, error)
            )
        if error is not None:
            raise MediaError(500, error, "http-client-error")
        if status is None or not 200 <= status < 300:
            raise MediaError(400, "Failed external validation", "failed-external-validation")

    async def _ingest(self, data: bytes, alias: str | None = None) -> UploadedFile:
        if len(data) > self.max_file_size_mb * MEGABYTES:
            raise MediaError(413, "File too large", "validate-file-size")
        fmt, width, height, frames = await asyncio.to_thread(detect_media, data)
        identifier = await asyncio.to_thread(self.store.save, data, fmt.media_type, fmt.extension)
        try:
            await self._validate(identifier, fmt)
        except MediaError:
            await asyncio.to_thread(self.store.remove, identifier)
            raise
        with self._lock:
            return self._commit(data, fmt, width, height, frames, alias, None, identifier)

    # --- handlers -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_file_size_mb * MEGABYTES * 2)
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.post("/image", self._upload),
                web.post("/image/backgrounded", self._upload_backgrounded),
                web.get("/image/backgrounded/claim", self._claim),
                web.get("/image/original/{alias}", self._serve),
                web.get("/image/original", self._serve),
                web.get("/image/details/original/{alias}", self._details),
                web.get("/image/details/original", self._details),
                web.get(r"/image/process.{ext}", self._process),
                web.delete("/image/delete/{token}/{alias}", self._delete_with_token),
                web.get("/image/delete/{token}/{alias}", self._delete_with_token),
                web.post("/internal/import", self._import),
                web.delete("/internal/variants", self._clean_variants),
                web.post("/internal/purge", self._purge),
                web.post("/internal/delete", self._delete_alias),
                web.get("/internal/aliases", self._list_aliases),
                web.get("/internal/identifier", self._identifier),
                web.post("/internal/set_not_found", self._set_not_found),
                web.get("/internal/hashes", self._hashes_page),
                web.post("/internal/prune_missing", self._prune_missing),
            ]
        )
        app.middlewares.append(self._internal_auth)
        return app

    @web.middleware
    async def _internal_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/internal"):
            token = request.headers.get("X-Api-Token")
            if self.api_key is None or token != self.api_key:
                return _error(401, "Invalid API Key", "invalid-api-token")
        response: web.StreamResponse = await handler(request)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        await asyncio.to_thread(self.store.health_check)
        return web.Response(status=200)

    async def _read_files(self, request: web.Request) -> list[tuple[str, bytes]]:
        if not request.content_type.startswith("multipart/"):
            raise MediaError(400, "Couldn't upload file", "file-upload-error")
        reader = await request.multipart()
        files: list[tuple[str, bytes]] = []
        limit = self.max_file_size_mb * MEGABYTES
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader) or not _FILE_FIELD.match(
                part.name or ""
            ):
                raise MediaError(
                    400, "Found field with unexpected name or type", "file-upload-error"
                )
            data = await part.read()
            if len(data) > limit:
                raise MediaError(413, "File too large", "validate-file-size")
            files.append((part.filename or "", bytes(data)))
        if not files:
            raise MediaError(400, "No files present in upload", "validate-no-files")
        return files

    async def _upload(self, request: web.Request) -> web.Response:
        return await self._handle_upload(request, keep_names=False)

    async def _import(self, request: web.Request) -> web.Response:
        return await self._handle_upload(request, keep_names=True)

    async def _handle_upload(self, request: web.Request, keep_names: bool) -> web.Response:
        done: list[UploadedFile] = []
        try:
            for filename, data in await self._read_files(request):
                done.append(await self._ingest(data, alias=filename if keep_names else None))
        except MediaError as exc:
            with self._lock:  # a failed request drops every session it opened
                for uploaded in done:
                    if uploaded.alias in self._aliases:
                        self._cleanup_alias(uploaded.alias)
            return _error(exc.status, exc.msg, exc.code)
        files = [
            {"file": f.alias, "delete_token": f.delete_token, "details": f.details} for f in done
        ]
        return json_response({"msg": "ok", "files": files}, status=201)

    async def _upload_backgrounded(self, request: web.Request) -> web.Response:
        try:
            files = await self._read_files(request)
        except MediaError as exc:
            return _error(exc.status, exc.msg, exc.code)
        uploads = []
        for _, data in files:
            upload_id = str(uuid.uuid4())
            # the raw upload is stored first, as octet-stream without extension
            raw = await asyncio.to_thread(self.store.save, data, "application/octet-stream", None)
            state = _Backgrounded()
            self._uploads[upload_id] = state
            asyncio.get_running_loop().create_task(self._process_backgrounded(state, raw, data))
            uploads.append({"upload_id": upload_id})
        return json_response({"msg": "ok", "uploads": uploads}, status=202)

    async def _process_backgrounded(self, state: _Backgrounded, raw: str, data: bytes) -> None:
        try:
            uploaded = await self._ingest(data)
            state.status = 200
            file = {
                "file": uploaded.alias,
                "delete_token": uploaded.delete_token,
                "details": uploaded.details,
            }
            state.result = {"msg": "ok", "files": [file]}
        except MediaError as exc:
            state.status = 422
            state.result = {"msg": exc.msg, "code": exc.code}
        finally:
            await asyncio.to_thread(self.store.remove, raw)
            state.done.set()

    async def _claim(self, request: web.Request) -> web.Response:
        state = self._uploads.get(request.query.get("upload_id", ""))
        if state is None:
            return _error(404, "Requested a file that doesn't exist", "not-found")
        if state.claimed:
            return _error(400, "Upload was already claimed", "already-claimed")
        try:
            await asyncio.wait_for(state.done.wait(), 10)
        except TimeoutError:
            return web.Response(status=204)
        state.claimed = True
        return json_response(state.result, status=state.status)

    def _alias_param(self, request: web.Request, *names: str) -> str | None:
        for name in names:
            if name in request.query:
                return request.query[name]
        return None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        alias = request.match_info.get("alias") or self._alias_param(request, "alias")
        if alias is None:
            return _error(400, _ALIAS_QUERY_ERROR, "invalid-query")
        not_found = False
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None and self._not_found_alias in self._aliases:
                entry, not_found = self._aliases[self._not_found_alias], True
            if entry is None:
                return web.Response(status=404)
            record = self._hashes[entry.hash]
        try:
            data = (
                b""
                if request.method == "HEAD"
                else await asyncio.to_thread(self.store.read, record.identifier)
            )
        except FileNotFoundError as exc:
            return _error(500, f"No such file or directory: {exc}", "not-found")
        modified = datetime.fromtimestamp(record.created_ns / 1e9, UTC)
        headers = {
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Cache-Control": "public, max-age=604800, immutable",
            "Accept-Ranges": "bytes",
            "Content-Type": record.details.content_type,
        }
        return web.Response(body=data, status=404 if not_found else 200, headers=headers)

    async def _details(self, request: web.Request) -> web.Response:
        alias = request.match_info.get("alias") or self._alias_param(request, "alias")
        with self._lock:
            entry = self._aliases.get(alias or "")
            if entry is None:
                return _error(404, "Requested a file that doesn't exist", "alias-not-found")
            return json_response(self._hashes[entry.hash].details.api())

    async def _process(self, request: web.Request) -> web.StreamResponse:
        ext = request.match_info["ext"]
        if ext not in PROCESS_FORMATS:
            return _error(
                400, "Process endpoint was called with invalid extension", "invalid-file-extension"
            )
        alias = self._alias_param(request, "src", "alias")
        if alias is None:
            return _error(
                400,
                "data did not match any variant of untagged enum ProcessSource",
                "invalid-query",
            )
        ops = [(k, v) for k, v in request.query.items() if k in ("thumbnail", "resize", "identity")]
        target = PROCESS_FORMATS[ext][1] if ext != "jpg" else "jpeg"
        path = "/".join(p for k, v in ops for p in ((k,) if k == "identity" else (k, v)))
        variant = f"{path}/{target}" if path else target
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None:
                return web.Response(status=404)
            record = self._hashes[entry.hash]
            identifier = record.variants.get(variant)
        if identifier is None:
            size = next(
                (int(v) for k, v in ops if k in ("thumbnail", "resize") and v.isdigit()), None
            )
            original = await asyncio.to_thread(self.store.read, record.identifier)
            data = await asyncio.to_thread(_render, original, target, size)
            fmt = FORMATS[PROCESS_FORMATS[target][1]]
            identifier = await asyncio.to_thread(
                self.store.save, data, fmt.media_type, fmt.extension
            )
            with self._lock:
                record.variants[variant] = identifier
        else:
            data = await asyncio.to_thread(self.store.read, identifier)
        media_type = FORMATS[PROCESS_FORMATS[target][1]].media_type
        return web.Response(
            body=data,
            headers={
                "Content-Type": media_type,
                "Cache-Control": "public, max-age=604800, immutable",
            },
        )

    async def _delete_with_token(self, request: web.Request) -> web.Response:
        token, alias = request.match_info["token"], request.match_info["alias"]
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None:  # already deleted
                return web.Response(status=204)
            if not secrets.compare_digest(entry.delete_token, token):
                return _error(
                    403, "Provided token did not match expected token", "invalid-delete-token"
                )
            self._cleanup_alias(alias)
        return web.Response(status=204)

    async def _clean_variants(self, request: web.Request) -> web.Response:
        with self._lock:
            doomed = [i for e in self._hashes.values() for i in e.variants.values()]
            for e in self._hashes.values():
                e.variants.clear()
        for identifier in doomed:
            await asyncio.to_thread(self.store.remove, identifier)
        return web.Response(status=204)

    async def _purge(self, request: web.Request) -> web.Response:
        alias = self._alias_param(request, "alias")
        if alias is None:
            return self._proxy_or_invalid(request)
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None:
                return _error(404, "Requested a file that doesn't exist", "alias-not-found")
            aliases = self._aliases_for(entry.hash)
            self._cleanup_hash(entry.hash)
        return json_response({"msg": "ok", "aliases": aliases})

    async def _delete_alias(self, request: web.Request) -> web.Response:
        alias = self._alias_param(request, "alias")
        if alias is None:
            return self._proxy_or_invalid(request)
        with self._lock:
            if alias not in self._aliases:
                return web.Response(status=404)
            self._cleanup_alias(alias)
        return json_response({"msg": "ok"})

    async def _list_aliases(self, request: web.Request) -> web.Response:
        alias = self._alias_param(request, "alias")
        if alias is None:
            return self._proxy_or_invalid(request)
        with self._lock:
            entry = self._aliases.get(alias)
            aliases = self._aliases_for(entry.hash) if entry else []
        return json_response({"msg": "ok", "aliases": aliases})

    async def _identifier(self, request: web.Request) -> web.Response:
        alias = self._alias_param(request, "alias")
        if alias is None:
            return self._proxy_or_invalid(request)
        with self._lock:
            entry = self._aliases.get(alias)
            if entry is None:
                return _error(404, "Requested a file that doesn't exist", "alias-not-found")
            return json_response({"msg": "ok", "identifier": self._hashes[entry.hash].identifier})

    def _proxy_or_invalid(self, request: web.Request) -> web.Response:
        if "proxy" in request.query:  # nothing is ever proxied through the fake
            return _error(404, "Media has not been proxied", "proxy-not-found")
        return _error(400, _ALIAS_QUERY_ERROR, "invalid-query")

    async def _set_not_found(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            alias = body["alias"]
        except Exception:  # noqa: BLE001 - any bad body is pict-rs's invalid-json
            return _error(400, "Invalid json supplied", "invalid-json")
        with self._lock:
            if alias not in self._aliases:
                return _error(404, "Requested a file that doesn't exist", "alias-not-found")
            self._not_found_alias = alias
        return json_response({"msg": "ok"}, status=201)

    async def _hashes_page(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "20"))
            stamp = request.query.get("timestamp")
            date_ns = _parse_rfc3339_ns(stamp) if stamp is not None else None
        except ValueError as exc:
            return _error(400, str(exc), "invalid-query")
        with self._lock:
            keys = sorted((e.created_ns, e.hash) for e in self._hashes.values())
            if date_ns is not None:
                page, prev, nxt = _page_by_date(keys, date_ns, limit)
            else:
                bound = _bound(self._hashes, request.query.get("slug"))
                page, prev, nxt = _page(keys, bound, limit)
            hashes = [
                {
                    "hex": digest.hex(),
                    "aliases": self._aliases_for(digest),
                    "details": self._hashes[digest].details.api(),
                }
                for digest in page
            ]
        body: dict[str, Any] = {"limit": limit}
        if page:
            body["current"] = hash_slug(page[0])
        if prev is not None:
            body["prev"] = hash_slug(prev)
        if nxt is not None:
            body["next"] = hash_slug(nxt)
        body["hashes"] = hashes
        return json_response({"msg": "ok", "page": body})

    async def _prune_missing(self, request: web.Request) -> web.Response:
        force = request.query.get("force", "").lower() == "true"
        with self._lock:
            response = {
                "complete": "prune-missing-complete" in self._kv,
                "progress": self._kv.get("prune-missing-queued", 0),
                "total": len(self._hashes),
            }
            start = "prune-missing-started" not in self._kv or force
            if start:
                self._kv["prune-missing-started"] = True
                entries = list(self._hashes.values())
        if start:
            missing = [
                e.hash
                for e in entries
                if not await asyncio.to_thread(self.store.exists, e.identifier)
            ]
            with self._lock:
                for digest in missing:
                    self._cleanup_hash(digest)
                self._kv["prune-missing-queued"] = len(missing)
                self._kv["prune-missing-complete"] = True
        return json_response(response)


def _parse_rfc3339_ns(value: str) -> int:
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value
    )
    if match is None:
        raise ValueError(f"invalid RFC 3339 timestamp: {value!r}")
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return int(stamp.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def _bound(hashes: dict[bytes, HashEntry], slug: str | None) -> tuple[int, bytes] | None:
    if not slug:
        return None
    try:
        digest = base64.urlsafe_b64decode(slug)
    except (ValueError, TypeError):
        return None
    entry = hashes.get(digest)
    return (entry.created_ns, digest) if entry else None


def _page(
    keys: list[tuple[int, bytes]], bound: tuple[int, bytes] | None, limit: int
) -> tuple[list[bytes], bytes | None, bytes | None]:
    """sled's ``hashes_ordered``: newest first from ``bound`` (inclusive); ``prev`` is up to
    ``limit`` entries newer than the bound."""
    if bound is None:
        page = list(reversed(keys))[: limit + 1]
        prev: tuple[int, bytes] | None = None
    else:
        page = [k for k in reversed(keys) if k <= bound][: limit + 1]
        newer = [k for k in keys if k >= bound][: limit + 1]
        prev = newer[-1] if newer and newer[-1] != bound else None
    nxt = page.pop() if len(page) > limit else None
    return [k[1] for k in page], prev[1] if prev else None, nxt[1] if nxt else None


def _page_by_date(
    keys: list[tuple[int, bytes]], date_ns: int, limit: int
) -> tuple[list[bytes], bytes | None, bytes | None]:
    """sled's ``hash_page_by_date``: entries older than ``date_ns``, newest first."""
    page = [k for k in reversed(keys) if k[0] < date_ns][: limit + 1]
    newer = [k for k in keys if k[0] >= date_ns][: limit + 1]
    prev = newer[-1] if newer else None
    nxt = page.pop() if len(page) > limit else None
    if prev is not None and page and prev == page[0]:
        prev = None
    return [k[1] for k in page], prev[1] if prev else None, nxt[1] if nxt else None


def _render(original: bytes, target: str, thumbnail: int | None) -> bytes:
    """A processed variant: shrink to fit ``thumbnail`` px, encode as ``target``."""
    save_as = PROCESS_FORMATS.get(target, ("PNG", "png"))[0]
    with Image.open(io.BytesIO(original)) as img:
        frame = img.convert("RGB") if save_as == "JPEG" else img.convert("RGBA")
        if thumbnail:
            frame.thumbnail((thumbnail, thumbnail))
        out = io.BytesIO()
        frame.save(out, format=save_as)
        return out.getvalue()
