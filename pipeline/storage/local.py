"""Local folders (pict-rs, Mastodon or Misskey local storage, an admin's media folder)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pipeline.events import StoreKind
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
)

# Metadata of a quarantined file lives beside it; listings skip these.
META_SUFFIX = ".pictguard-meta.json"


def _walk_sorted(
    folder: Path, prefix: str, rel: str = "", hidden: tuple[str, ...] = ()
) -> Iterator[tuple[str, os.stat_result]]:
    """Files under ``folder`` as (relative posix key, stat) in lexicographic key order.

    Sorting a folder's entries with directories keyed as ``name + '/'`` makes this
    depth-first walk yield keys in the order S3 lists them, so one ``start_after``
    checkpoint serves both stores. Keys under a ``hidden`` prefix are skipped (a hidden
    folder is not entered at all).
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    keyed: list[tuple[str, os.DirEntry[str], bool]] = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            keyed.append((entry.name + "/", entry, True))
        elif entry.is_file(follow_symlinks=False):
            keyed.append((entry.name, entry, False))
    keyed.sort(key=lambda t: t[0])
    for name, entry, is_dir in keyed:
        key = rel + name
        if hidden and key.startswith(hidden):
            continue
        if is_dir:
            if prefix.startswith(key) or key.startswith(prefix):
                yield from _walk_sorted(Path(entry.path), prefix, key, hidden)
        elif key.startswith(prefix) and not key.endswith(META_SUFFIX):
            try:
                yield key, entry.stat()
            except FileNotFoundError:
                continue


class LocalStore(ObjectStore):
    kind = StoreKind.FILE

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes {self.root}")
        return path

    async def check(self) -> None:
        if not self.root.exists():
            raise LocationNotFound(f"folder {self.root} does not exist — check the path")
        if not self.root.is_dir():
            raise LocationNotFound(f"{self.root} is not a folder")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise AccessDenied(f"cannot read folder {self.root} — check its permissions")

    async def list(  # type: ignore[override]
        self, prefix: str = "", start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        iterator = _walk_sorted(self.root, prefix, hidden=self.hidden_prefixes)
        while True:
            chunk = await asyncio.to_thread(_take, iterator, 1000)
            for key, st in chunk:
                if start_after is not None and key <= start_after:
                    continue
                yield ObjectInfo(
                    key=key,
                    size=st.st_size,
                    etag=file_etag(st),
                    last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
                )
            if len(chunk) < 1000:
                return

    async def get(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            try:
                with path.open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size > max_bytes:
                        raise ObjectTooLarge(key, size, max_bytes)
                    data = f.read(size + 1)  # never preallocate the cap itself
            except (FileNotFoundError, IsADirectoryError):
                raise ObjectMissing(f"{path} does not exist") from None
            except PermissionError:
                raise AccessDenied(f"cannot read {path} — check its permissions") from None
            if len(data) > max_bytes:
                raise ObjectTooLarge(key, len(data), max_bytes)
            return data

        return await asyncio.to_thread(read)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(self._path(key).stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=file_etag(st),
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    async def metadata(self, key: str) -> dict[str, str]:
        meta = self._path(key).with_name(self._path(key).name + META_SUFFIX)
        try:
            text = await asyncio.to_thread(meta.read_text)
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in json.loads(text).items()}

    async def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
    ) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".pictguard-tmp")
            tmp.write_bytes(data)
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() fails if the name is taken: no window in which a second writer
                # could replace what the first one put there.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ObjectExists(f"{path} already exists; not overwritten") from None
                finally:
                    tmp.unlink(missing_ok=True)
            if metadata:
                path.with_name(path.name + META_SUFFIX).write_text(json.dumps(dict(metadata)))

        await asyncio.to_thread(write)

    async def delete(self, key: str) -> bool:
        path = self._path(key)

        def remove() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            path.with_name(path.name + META_SUFFIX).unlink(missing_ok=True)
            return True

        return await asyncio.to_thread(remove)

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
        if not overwrite and await target.head(target_key) is not None:
            raise ObjectExists(f"{target.location}/{target_key} already exists; not overwritten")
        if if_match is not None:
            await self._expect(key, if_match)
        data = await self.get(key, max_bytes=2**40)
        if if_match is not None:
            await self._expect(key, if_match)  # and not changed while it was read
        await target.put(target_key, data, metadata, content_type=content_type, overwrite=overwrite)
        if retention is not None:
            await target.retain(target_key, retention)

    async def _expect(self, key: str, tag: str) -> None:
        info = await self.head(key)
        if info is None:
            raise ObjectMissing(f"{self.root / key} does not exist")
        if info.etag != tag:
            raise ObjectChanged(f"{self.root / key} changed (tag {info.etag}, expected {tag})")


def file_etag(st: os.stat_result) -> str:
    """The tag a folder store gives a file: modification time and size (what listings,
    the watcher and reconcile all compare)."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def _take(
    iterator: Iterator[tuple[str, os.stat_result]], n: int
) -> list[tuple[str, os.stat_result]]:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out
