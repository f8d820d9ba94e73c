"""Object storage: S3-compatible buckets and local folders behind one interface."""

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

__all__ = [
    "AccessDenied",
    "LocationNotFound",
    "ObjectChanged",
    "ObjectExists",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "ObjectTooLarge",
    "Retention",
    "StorageError",
    "StoreUnavailable",
]
