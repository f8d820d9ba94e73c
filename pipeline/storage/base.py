"""The storage interface every role uses, and its errors."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from pipeline.errors import PictguardError
from pipeline.events import ObjectRef, StoreKind


class StorageError(PictguardError, RuntimeError):
    """Base of storage errors; messages say what the admin should check."""


class LocationNotFound(StorageError):
    """The bucket or folder does not exist."""


class AccessDenied(StorageError):
    """Credentials are missing, wrong, or lack a permission."""


class StoreUnavailable(StorageError):
    """The store cannot be reached (network, endpoint, server errors after retries)."""


class ObjectMissing(StorageError):
    """The object is not there (any more)."""


class ObjectTooLarge(StorageError):
    """The object is larger than the configured cap; it was not downloaded."""

    def __init__(self, key: str, size: int, cap: int) -> None:
        super().__init__(f"object {key} is {size} bytes, above the {cap}-byte cap")
        self.size = size
        self.cap = cap


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object."""

    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    version_id: str | None = None


class ObjectStore(abc.ABC):
    """One bucket (S3) or one root folder (local)."""

    kind: StoreKind
    location: str  # bucket name, or absolute root folder

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise a :class:`StorageError` if the location is missing or not accessible."""

    @abc.abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
        """Objects under ``prefix`` in lexicographic key order, after ``start_after``."""

    @abc.abstractmethod
    async def get(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        """The object's bytes; :class:`ObjectTooLarge` above ``max_bytes`` without reading it."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """Size and tag of ``key``, or None if absent."""

    @abc.abstractmethod
    async def put(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete ``key``; False if it was already absent."""

    @abc.abstractmethod
    async def copy_to(
        self, key: str, target: ObjectStore, target_key: str, metadata: Mapping[str, str]
    ) -> None:
        """Copy ``key`` to ``target``/``target_key`` (server-side where both are one S3)."""

    @abc.abstractmethod
    async def metadata(self, key: str) -> dict[str, str]:
        """User metadata stored with ``key`` (empty if none)."""

    def ref(self, key: str, info: ObjectInfo | None = None) -> ObjectRef:
        return ObjectRef(
            store=self.kind,
            bucket=self.location,
            key=key,
            etag=info.etag if info else None,
            size=info.size if info else None,
            version_id=info.version_id if info else None,
        )

    async def close(self) -> None:  # noqa: B027 — most stores hold nothing to release
        """Release connections."""
