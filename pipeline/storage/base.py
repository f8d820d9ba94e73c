"""The storage interface every role uses, and its errors."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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


class ObjectExists(StorageError):
    """A write that must not overwrite found the key already taken."""


class ObjectChanged(StorageError):
    """The object's current version is not the one an action was decided on."""


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
    # Known from a HEAD, not from a listing: None means "not asked", not "none".
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None


LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True, slots=True)
class Retention:
    """Object-lock retention to set on a written object (S3 only)."""

    until: datetime
    mode: LockMode = "GOVERNANCE"


class ObjectStore(abc.ABC):
    """One bucket (S3) or one root folder (local)."""

    kind: StoreKind
    location: str  # bucket name, or absolute root folder
    # Key prefixes that listings leave out (the quarantine location inside this store);
    # set by :class:`pipeline.storage.locations.Stores` from its scope.
    hidden_prefixes: tuple[str, ...] = ()
    # Whether :meth:`retain` can lock objects here (S3 object lock).
    supports_retention: bool = False

    def hides(self, key: str) -> bool:
        """Whether listings leave ``key`` out (it lies in the quarantine location)."""
        return any(key.startswith(p) for p in self.hidden_prefixes)

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
        """Size, tag, content type (S3) and user metadata (S3) of ``key``, or None if absent."""

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
    ) -> None:
        """Write ``key``; with ``overwrite=False`` raise :class:`ObjectExists` if it is taken.

        ``content_type`` is kept where the store keeps one (S3); a folder does not.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete ``key``; False if it was already absent."""

    @abc.abstractmethod
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
        """Copy ``key`` to ``target``/``target_key`` with ``metadata`` replacing the user
        metadata (server-side where both are buckets of one S3 endpoint).

        ``content_type`` is set on the copy where the target keeps one. ``if_match`` is the
        eTag the source must still have (else :class:`ObjectChanged`, nothing written);
        ``overwrite=False`` refuses a taken target key (:class:`ObjectExists`);
        ``retention`` locks the copy (stores without :attr:`supports_retention` raise).
        """

    async def retain(self, key: str, retention: Retention) -> None:
        """Set object-lock retention on ``key``; stores without object lock refuse."""
        raise self._unlockable()

    def refuse_unlockable(self, retention: Retention | None) -> None:
        """Raise :class:`StorageError` when ``retention`` is asked of a store that cannot
        lock objects (checked before a copy writes anything)."""
        if retention is not None and not self.supports_retention:
            raise self._unlockable()

    def _unlockable(self) -> StorageError:
        return StorageError(
            f"{self.location} cannot lock objects (object-lock retention is S3 only)"
        )

    async def retention_enabled(self) -> bool:
        """Whether objects written here can be locked (S3: object lock on the bucket)."""
        return False

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
