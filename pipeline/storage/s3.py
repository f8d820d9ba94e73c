"""S3-compatible storage through aiobotocore (AWS, MinIO, Ceph RGW, Garage, B2, moto)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from pipeline.errors import PictguardError
from pipeline.events import StoreKind
from pipeline.retry import retrying
from pipeline.settings import S3Settings
from pipeline.storage.base import (
    AccessDenied,
    LocationNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    ObjectTooLarge,
    Retention,
    StorageError,
    StoreUnavailable,
)

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_PRECONDITION = {"PreconditionFailed", "412"}
# Copies between different stores or endpoints pass through memory; media objects are
# far smaller than this.
_MAX_COPY_BYTES = 2**32
# A body that breaks off after the headers is not retried by botocore; get() retries it
# itself, up to s3.max_attempts, waiting this long times 2^(attempt - 1) in between.
_BODY_RETRY_S = 0.2

log = logging.getLogger(__name__)


class _BodyBroken(PictguardError):
    """The object's body broke off (reset, timeout, short read) after its headers."""


class S3Connection:
    """One aiobotocore client shared by every bucket of one endpoint."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint_url or f"AWS S3 ({self.settings.region})"

    async def client(self) -> Any:
        if self._client is None:
            s = self.settings
            config = AioConfig(
                max_pool_connections=s.max_pool_connections,
                connect_timeout=s.connect_timeout_s,
                read_timeout=s.read_timeout_s,
                retries={"total_max_attempts": s.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path" if s.path_style else "auto"},
            )
            session = get_session()
            self._client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=s.endpoint_url,
                    region_name=s.region,
                    aws_access_key_id=s.access_key_id,
                    aws_secret_access_key=s.secret_access_key,
                    aws_session_token=s.session_token,
                    config=config,
                )
            )
        return self._client

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    def bucket(self, name: str) -> S3Store:
        return S3Store(self, name)

    def translate(self, exc: Exception, bucket: str, key: str | None = None) -> StorageError:
        """Turn a botocore error into a storage error that tells the admin what to check."""
        where = f"s3://{bucket}/{key}" if key else f"bucket '{bucket}'"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AccessDenied(
                f"no S3 credentials for {where} — set PICTGUARD_S3__ACCESS_KEY_ID and "
                "PICTGUARD_S3__SECRET_ACCESS_KEY, or the standard AWS credential chain"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return LocationNotFound(
                    f"bucket '{bucket}' not found at {self.endpoint} — check the bucket name "
                    "and PICTGUARD_S3__ENDPOINT_URL"
                )
            if code in _DENIED:
                return AccessDenied(
                    f"access denied to {where} at {self.endpoint} ({code}) — check "
                    "PICTGUARD_S3__ACCESS_KEY_ID / PICTGUARD_S3__SECRET_ACCESS_KEY and the "
                    "bucket policy"
                )
            if code in _MISSING_KEY:
                return ObjectMissing(f"{where} does not exist")
            if code in _PRECONDITION:
                return ObjectChanged(f"{where} changed (its eTag is not the expected one)")
            return StoreUnavailable(f"S3 error on {where} at {self.endpoint}: {code} {exc}")
        if isinstance(exc, EndpointConnectionError):
            return StoreUnavailable(
                f"cannot reach S3 at {self.endpoint} — check PICTGUARD_S3__ENDPOINT_URL and "
                "that the server is running"
            )
        if isinstance(exc, (BotoCoreError, OSError, TimeoutError)):
            return StoreUnavailable(f"S3 at {self.endpoint} failed on {where}: {exc}")
        raise exc


class S3Store(ObjectStore):
    kind = StoreKind.S3
    supports_retention = True

    def __init__(self, connection: S3Connection, bucket: str) -> None:
        self.connection = connection
        self.location = bucket

    def _error(self, exc: Exception, key: str | None = None) -> StorageError:
        return self.connection.translate(exc, self.location, key)

    async def check(self) -> None:
        client = await self.connection.client()
        try:
            await client.head_bucket(Bucket=self.location)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise LocationNotFound(
                    f"bucket '{self.location}' not found at {self.connection.endpoint} — check "
                    "the bucket name and PICTGUARD_S3__ENDPOINT_URL"
                ) from None
            raise self._error(exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc) from None

    async def list(  # type: ignore[override]
        self, prefix: str = "", start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        client = await self.connection.client()
        kwargs: dict[str, Any] = {"Bucket": self.location, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(**kwargs):
                for item in page.get("Contents", ()):
                    if self.hidden_prefixes and self.hides(item["Key"]):
                        continue
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"') or None,
                        last_modified=item.get("LastModified"),
                    )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc) from None

    async def get(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        attempts = self.connection.settings.max_attempts
        where = f"s3://{self.location}/{key}"

        def again(exc: BaseException, attempt: int, delay: float) -> None:
            log.info(
                "reading an object broke off, retrying",
                extra={"object": where, "error": str(exc)},
            )

        try:
            async for attempt in retrying(
                lambda exc: isinstance(exc, _BodyBroken),
                first_s=_BODY_RETRY_S,
                max_s=_BODY_RETRY_S * 2**attempts,
                max_attempts=attempts,
                on_retry=again,
            ):
                with attempt:
                    return await self._get_once(key, max_bytes, version_id)
        except _BodyBroken as exc:
            raise StoreUnavailable(
                f"S3 at {self.connection.endpoint} failed on {where}"
                f" after {attempts} attempts (s3.max_attempts): {exc}"
            ) from None
        raise AssertionError("unreachable")  # the attempts return or raise

    async def _get_once(self, key: str, max_bytes: int, version_id: str | None) -> bytes:
        client = await self.connection.client()
        kwargs: dict[str, Any] = {"Bucket": self.location, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            # botocore has retried the request itself (s3.max_attempts) when this raises.
            response = await client.get_object(**kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None
        length = int(response.get("ContentLength", 0))
        try:
            async with response["Body"] as body:
                if length > max_bytes:
                    raise ObjectTooLarge(key, length, max_bytes)
                # read(n) returns what has arrived so far, not n bytes: read to the end,
                # but never past the cap (a server may send more than it announced).
                chunks: list[bytes] = []
                size = 0
                while chunk := await body.read(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ObjectTooLarge(key, size, max_bytes)
                    chunks.append(chunk)
        except (aiohttp.ClientError, BotoCoreError, OSError) as exc:
            raise _BodyBroken(f"{exc.__class__.__name__}: {exc}") from None
        data = b"".join(chunks)
        if length and len(data) != length:
            raise _BodyBroken(f"got {len(data)} of {length} bytes")
        return data

    async def head(self, key: str) -> ObjectInfo | None:
        client = await self.connection.client()
        try:
            r = await client.head_object(Bucket=self.location, Key=key)
        except ClientError as exc:
            err = self._error(exc, key)
            if isinstance(err, ObjectMissing):
                return None
            raise err from None
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None
        return ObjectInfo(
            key=key,
            size=int(r.get("ContentLength", 0)),
            etag=str(r.get("ETag", "")).strip('"') or None,
            last_modified=r.get("LastModified"),
            version_id=r.get("VersionId"),
            content_type=r.get("ContentType"),
            metadata=dict(r.get("Metadata", {})),
        )

    async def metadata(self, key: str) -> dict[str, str]:
        client = await self.connection.client()
        try:
            r = await client.head_object(Bucket=self.location, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None
        return dict(r.get("Metadata", {}))

    async def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
    ) -> None:
        if not overwrite:
            await self._refuse_taken(key)
        client = await self.connection.client()
        kwargs: dict[str, Any] = {
            "Bucket": self.location,
            "Key": key,
            "Body": data,
            "Metadata": dict(metadata or {}),
        }
        if content_type:
            kwargs["ContentType"] = content_type
        try:
            await client.put_object(**kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None

    async def _refuse_taken(self, key: str) -> None:
        # A HEAD first: If-None-Match on writes is too new for every S3-compatible store.
        # Writers of one key are serialised by the caller (one object id, one partition).
        if await self.head(key) is not None:
            raise ObjectExists(f"s3://{self.location}/{key} already exists; not overwritten")

    async def delete(self, key: str) -> bool:
        if await self.head(key) is None:
            return False
        client = await self.connection.client()
        try:
            await client.delete_object(Bucket=self.location, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None
        return True

    async def copy_to(
        self,
        key: str,
        target: ObjectStore,
        target_key: str,
        metadata: Mapping[str, str],
        *,
        content_type: str | None = None,
        if_match: str | None = None,
        overwrite: bool = True,
        retention: Retention | None = None,
    ) -> None:
        target.refuse_unlockable(retention)
        if not overwrite and isinstance(target, S3Store):
            await target._refuse_taken(target_key)
        if isinstance(target, S3Store) and target.connection is self.connection:
            await self._copy_here(key, target, target_key, metadata, content_type, if_match)
        else:
            if if_match is not None:
                await self._expect(key, if_match)
            data = await self.get(key, max_bytes=_MAX_COPY_BYTES)
            await target.put(
                target_key, data, metadata, content_type=content_type, overwrite=overwrite
            )
        if retention is not None:
            # A separate call (not lock headers on the copy): stores differ in which
            # checksum headers they demand on a locked write, and a failed lock leaves the
            # original alone.
            await target.retain(target_key, retention)

    async def _expect(self, key: str, etag: str) -> None:
        info = await self.head(key)
        if info is None:
            raise ObjectMissing(f"s3://{self.location}/{key} does not exist")
        if info.etag is not None and info.etag != etag.strip('"'):
            raise ObjectChanged(
                f"s3://{self.location}/{key} changed (eTag {info.etag}, expected {etag})"
            )

    async def _copy_here(
        self,
        key: str,
        target: S3Store,
        target_key: str,
        metadata: Mapping[str, str],
        content_type: str | None,
        if_match: str | None,
    ) -> None:
        """One server-side CopyObject: the only copy between buckets of one endpoint."""
        client = await self.connection.client()
        kwargs: dict[str, Any] = {
            "Bucket": target.location,
            "Key": target_key,
            "CopySource": {"Bucket": self.location, "Key": key},
            "Metadata": dict(metadata),
            # REPLACE is needed to set our metadata; it resets Content-Type, so pass it.
            "MetadataDirective": "REPLACE",
        }
        if content_type:
            kwargs["ContentType"] = content_type
        if if_match is not None:
            # The store checks it atomically; the HEAD before covers stores that ignore it.
            await self._expect(key, if_match)
            kwargs["CopySourceIfMatch"] = '"' + if_match.strip('"') + '"'
        try:
            await client.copy_object(**kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            error = self._error(exc, key)
            if isinstance(error, LocationNotFound):
                # Either bucket may be the missing one; name the target if it is.
                await target.check()
            raise error from None

    async def retain(self, key: str, retention: Retention) -> None:
        client = await self.connection.client()
        try:
            await client.put_object_retention(
                Bucket=self.location,
                Key=key,
                Retention={"Mode": retention.mode, "RetainUntilDate": retention.until},
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from None

    async def retention_enabled(self) -> bool:
        client = await self.connection.client()
        try:
            r = await client.get_object_lock_configuration(Bucket=self.location)
        except ClientError:
            return False  # not configured, or not implemented by this store
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc) from None
        return bool(r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")
