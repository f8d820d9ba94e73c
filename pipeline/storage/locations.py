"""Parse what admins type (``s3://bucket/prefix``, ``./media``) and open the right store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.events import ObjectRef, StoreKind
from pipeline.settings import S3Settings
from pipeline.storage.base import ObjectStore, StorageError
from pipeline.storage.local import LocalStore
from pipeline.storage.s3 import S3Connection


@dataclass(frozen=True, slots=True)
class Location:
    """A bucket or folder plus a key prefix inside it."""

    kind: StoreKind
    root: str
    prefix: str = ""

    def __str__(self) -> str:
        if self.kind is StoreKind.S3:
            return f"s3://{self.root}/{self.prefix}"
        return str(Path(self.root) / self.prefix)


def parse_location(text: str) -> Location:
    """``s3://bucket[/prefix]`` or a folder path (``file://`` optional)."""
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if len(bucket) < 3:
            raise StorageError(f"{text!r} has no valid bucket name (s3://bucket[/prefix])")
        return Location(StoreKind.S3, bucket, prefix)
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"{text!r}: only s3://bucket[/prefix] and folder paths are supported")
    path = Path(text.removeprefix("file://")).expanduser().resolve()
    return Location(StoreKind.FILE, str(path), "")


class Stores:
    """Opens stores on demand and shares one S3 connection between buckets."""

    def __init__(self, s3: S3Settings) -> None:
        self._s3 = S3Connection(s3)
        self._stores: dict[tuple[StoreKind, str], ObjectStore] = {}

    def open(self, kind: StoreKind, root: str) -> ObjectStore:
        store = self._stores.get((kind, root))
        if store is None:
            store = self._s3.bucket(root) if kind == StoreKind.S3 else LocalStore(Path(root))
            self._stores[(kind, root)] = store
        return store

    def for_ref(self, ref: ObjectRef) -> ObjectStore:
        return self.open(ref.store, ref.bucket)

    def for_location(self, location: Location) -> ObjectStore:
        return self.open(location.kind, location.root)

    async def close(self) -> None:
        await self._s3.close()
