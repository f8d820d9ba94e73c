"""Parse what admins type (``s3://bucket/prefix``, ``./media``, object ids), check keys
against their root, say where pictguard may act, and open the right store.

One parser for each thing an admin or an event names:

- :func:`parse_location`: a bucket/prefix or folder to scan, watch or reconcile;
- :func:`parse_object_id`: one object, ``s3://bucket/key``, ``file:///path`` or a path
  (the inverse of :attr:`pipeline.events.ObjectRef.id`);
- :func:`check_key` / :func:`resolve_key`: a key that must stay inside its folder.

:class:`Scope` holds the locations pictguard may act on (``storage.allowed_locations``
plus what the configuration implies) and the quarantine location that listings, the
watcher and events leave out; :class:`Stores` opens stores with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.events import ObjectRef, StoreKind
from pipeline.settings import S3Settings
from pipeline.storage.base import ObjectStore, StorageError
from pipeline.storage.local import LocalStore
from pipeline.storage.s3 import S3Connection


class UnsafePath(StorageError):
    """A key or path that would leave its root (``..``, an absolute key, a symlink out)."""


class LocationNotAllowed(StorageError):
    """An object outside every location pictguard may act on (``storage.allowed_locations``)."""


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

    def contains(self, kind: StoreKind, root: str, key: str = "") -> bool:
        """Whether the object ``key`` of store (``kind``, ``root``) lies in this location."""
        if kind is not self.kind:
            return False
        if kind is StoreKind.S3:
            return root == self.root and key.startswith(self.prefix)
        return _within(_file_path(root, key), _file_path(self.root, self.prefix))

    def prefix_in(self, kind: StoreKind, root: str) -> str | None:
        """The key prefix this location takes inside store (``kind``, ``root``): "" when it
        covers the whole store, None when it does not overlap it."""
        if kind is not self.kind:
            return None
        if kind is StoreKind.S3:
            return self.prefix if root == self.root else None
        mine, store = _file_path(self.root, self.prefix), os.path.normpath(root)
        if _within(store, mine):
            return ""
        if _within(mine, store):
            return PurePosixPath(os.path.relpath(mine, store)).as_posix() + "/"
        return None


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


def is_object_id(text: str) -> bool:
    """Whether ``text`` names an object (``s3://``, ``file://`` or a path), not a hash or id."""
    return text.startswith(("s3://", "file://", "/", "./", "../", "~"))


def parse_object_id(text: str, roots: Iterable[str | Path] = ()) -> ObjectRef:
    """The object ``text`` names: ``s3://bucket/key``, ``file:///path`` or a path.

    A file id does not say where its root ends: the deepest of ``roots`` that holds the
    file becomes the ref's root (the key is the rest), else its folder. The path is made
    absolute and resolved (symlinks too), so ``/media/../etc/x`` names ``/etc/x``; callers
    that must refuse such spellings call :func:`check_path_text` first. Raises
    :class:`StorageError` for anything else.
    """
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        if len(bucket) < 3 or not key:
            raise StorageError(f"{text!r}: expected s3://bucket/key")
        return ObjectRef(store=StoreKind.S3, bucket=bucket, key=key)
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"{text!r}: expected s3://bucket/key, file:///path or a path")
    raw = text.removeprefix("file://")
    if not raw or "\0" in raw:
        raise StorageError(f"{text!r}: not a file path")
    path = os.path.realpath(Path(raw).expanduser())
    best: str | None = None
    for root in roots:
        real_root = os.path.realpath(root)
        deeper = best is None or len(real_root) > len(best)
        if deeper and path != real_root and _within(path, real_root):
            best = real_root
    if best is None:
        folder, name = os.path.split(path)
        return ObjectRef(store=StoreKind.FILE, bucket=folder or "/", key=name)
    key = PurePosixPath(os.path.relpath(path, best)).as_posix()
    return ObjectRef(store=StoreKind.FILE, bucket=best, key=key)


def check_path_text(text: str) -> None:
    """Refuse a file target spelled with ``..`` segments (``file:///media/../etc/x``)."""
    raw = text.removeprefix("file://")
    if ".." in PurePosixPath(raw).parts or ".." in Path(raw).parts:
        raise UnsafePath(f"{text!r}: '..' in a path is not accepted; give the real path")


def check_key(key: str) -> str:
    """``key`` if it is a relative path that stays inside its root, else :class:`UnsafePath`.

    Lexical only (no I/O): empty, absolute, ``..`` segments and NUL bytes are refused.
    """
    if not key or "\0" in key or key.startswith("/") or "\\" in key:
        raise UnsafePath(f"key {key!r} is not a relative path inside its folder")
    if ".." in PurePosixPath(key).parts:
        raise UnsafePath(f"key {key!r} leaves its folder ('..')")
    return key


def resolve_key(root: str | Path, key: str) -> Path:
    """The real path of ``key`` under ``root``; :class:`UnsafePath` if it is not there.

    Blocking (it follows symlinks): run it off the event loop. A key that reaches its
    file through a symlink anywhere on the way is refused even when the target is inside
    the root, so one file has one key.
    """
    check_key(key)
    real_root = os.path.realpath(root)
    lexical = os.path.normpath(os.path.join(real_root, key))
    real = os.path.realpath(lexical)
    if real != lexical or not _within(real, real_root):
        raise UnsafePath(f"key {key!r} of {real_root} goes through a symlink to {real}")
    return Path(real)


def _file_path(root: str, key: str) -> str:
    return os.path.normpath(os.path.join(root, key)) if key else os.path.normpath(root)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Scope:
    """Where pictguard may act, and the quarantine location it never scans.

    ``allowed`` empty means unrestricted (nothing configured that says where media is).
    ``quarantine`` are locations every listing, the watcher and events leave out;
    ``quarantine_prefix`` is a bare prefix left out in every bucket and folder.
    """

    allowed: tuple[Location, ...] = ()
    quarantine: tuple[Location, ...] = ()
    quarantine_prefix: str | None = None
    sources: tuple[str, ...] = field(default=(), compare=False)  # where ``allowed`` came from

    @classmethod
    def of(
        cls,
        allowed: Sequence[str],
        *,
        quarantine: Sequence[Location] = (),
        quarantine_prefix: str | None = None,
        sources: Sequence[str] = (),
    ) -> Scope:
        """A scope from location strings (``s3://bucket[/prefix]`` or folders)."""
        parsed: list[Location] = []
        for text in allowed:
            location = parse_location(str(text))
            if location not in parsed:
                parsed.append(location)
        return cls(tuple(parsed), tuple(quarantine), quarantine_prefix, tuple(sources))

    @property
    def restricted(self) -> bool:
        """Whether only ``allowed`` locations may be acted on."""
        return bool(self.allowed)

    def describe_allowed(self) -> str:
        """The allowed locations in words."""
        if not self.allowed:
            return "any location (storage.allowed_locations is empty)"
        return ", ".join(str(a) for a in self.allowed)

    def refusal(self, ref: ObjectRef) -> str | None:
        """Why pictguard must not act on ``ref`` (outside every allowed location), or None."""
        if not self.allowed:
            return None
        if any(a.contains(ref.store, ref.bucket, ref.key) for a in self.allowed):
            return None
        return (
            f"{ref.id} is outside the locations pictguard may act on "
            f"({self.describe_allowed()}) — add its bucket or folder to "
            "storage.allowed_locations if it should be scanned and acted on"
        )

    def check(self, ref: ObjectRef) -> None:
        """Raise :class:`LocationNotAllowed` if ``ref`` lies outside the allowed locations."""
        reason = self.refusal(ref)
        if reason is not None:
            raise LocationNotAllowed(reason)

    def hidden_prefixes(self, kind: StoreKind, root: str) -> tuple[str, ...]:
        """Key prefixes of store (``kind``, ``root``) that lie in the quarantine location."""
        found = [p for q in self.quarantine if (p := q.prefix_in(kind, root)) is not None]
        if self.quarantine_prefix:
            found.append(self.quarantine_prefix)
        return tuple(dict.fromkeys(found))

    def in_quarantine(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` lies in the quarantine location (never scanned or acted on)."""
        return any(ref.key.startswith(p) for p in self.hidden_prefixes(ref.store, ref.bucket))


class Stores:
    """Opens stores on demand and shares one S3 connection between buckets.

    Every store it opens leaves the ``scope``'s quarantine location out of its listings.
    """

    def __init__(self, s3: S3Settings, scope: Scope | None = None) -> None:
        self._s3 = S3Connection(s3)
        self._stores: dict[tuple[StoreKind, str], ObjectStore] = {}
        self.scope = scope or Scope()

    def open(self, kind: StoreKind, root: str) -> ObjectStore:
        store = self._stores.get((kind, root))
        if store is None:
            store = self._s3.bucket(root) if kind == StoreKind.S3 else LocalStore(Path(root))
            store.hidden_prefixes = self.scope.hidden_prefixes(store.kind, store.location)
            self._stores[(kind, root)] = store
        return store

    def for_ref(self, ref: ObjectRef) -> ObjectStore:
        return self.open(ref.store, ref.bucket)

    def for_location(self, location: Location) -> ObjectStore:
        return self.open(location.kind, location.root)

    async def close(self) -> None:
        await self._s3.close()
