"""Object storage: S3-compatible buckets and local folders behind one interface."""

from pipeline.storage.base import (
    AccessDenied,
    LocationNotFound,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    StoreUnavailable,
)

__all__ = [
    "AccessDenied",
    "LocationNotFound",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "ObjectTooLarge",
    "StorageError",
    "StoreUnavailable",
]
