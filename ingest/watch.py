"""Filesystem watcher for local media folders (pict-rs files store, Mastodon, Misskey).

Media servers write uploads in place, chunk by chunk, so a creation event names a file that
is not complete yet. The watcher (watchfiles: inotify, or polling on mounts without it)
keeps every added or modified file pending until its size and modification time have stayed
the same for ``ingest.watch.settle_s``, then produces one scan request (``source=watch``)
for it. Temporary names (dot files, ``*.tmp``, ``*.part``) are skipped; their final rename
is what gets scanned. So are the quarantine location (pictguard's own copies, when it lies
inside a watched folder) and files reached through a symlink (a link out of the root must
not make pictguard read, or act on, what lies outside it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from ingest.dedupe import DedupeWindow
from ingest.intake import Intake
from ingest.settings import IngestConfig
from ingest.sources import ObjectEvent
from pipeline.bus.base import Bus, BusError
from pipeline.events import Source, StoreKind
from pipeline.settings import SettingsError
from pipeline.storage.local import META_SUFFIX, file_etag
from pipeline.storage.locations import Scope, UnsafePath, resolve_key

log = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".pictguard-tmp", "~")


def is_temporary(name: str) -> bool:
    """Names writers use before renaming into place, and pictguard's own side files."""
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(_TEMP_SUFFIXES) or name.endswith(META_SUFFIX)


def _watch_filter(change: Change, path: str) -> bool:
    return not is_temporary(os.path.basename(path))


class WatchRootError(SettingsError):
    """A folder to watch is missing or not a folder."""


@dataclass(slots=True)
class _Pending:
    since: float
    signature: tuple[int, int] | None = None  # (size, mtime_ns) at the last look


class FileWatcher:
    """Watches one root folder and produces scan requests for completely written files."""

    def __init__(
        self,
        settings: IngestConfig,
        bus: Bus,
        root: Path,
        *,
        dedupe: DedupeWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
        scope: Scope | None = None,
    ) -> None:
        self.settings = settings
        self.watch = settings.ingest.watch
        self.root = root.resolve()
        self.location = str(self.root)
        scope = scope or Scope()
        self.hidden = scope.hidden_prefixes(StoreKind.FILE, self.location)
        self.intake = Intake(settings, bus, source=Source.WATCH, dedupe=dedupe, scope=scope)
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    @property
    def pending(self) -> int:
        """Files seen changing and not yet settled."""
        return len(self._pending)

    def _key(self, path: str) -> str | None:
        # watchfiles reports paths under the (resolved) root it was given: no syscall needed.
        rel = os.path.relpath(path, self.location)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return None
        key = Path(rel).as_posix()
        if self.hidden and key.startswith(self.hidden):
            return None  # the quarantine location: pictguard's own writes
        return key

    def note(self, change: Change, path: str) -> None:
        """Take one watchfiles change into account."""
        key = self._key(path)
        if key is None:
            return
        if change == Change.deleted:
            self._pending.pop(key, None)
            self.intake.dedupe.forget_object(self.location, key)
            return
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = _Pending(since=self._clock())
        else:
            entry.since = self._clock()

    def _stat_all(
        self, keys: list[str]
    ) -> tuple[dict[str, os.stat_result | None], dict[str, list[tuple[str, tuple[int, int]]]]]:
        """Regular files' stat (None for anything gone or not a file), and the files inside
        the folders among ``keys``; runs in a thread."""
        found: dict[str, os.stat_result | None] = {}
        inside: dict[str, list[tuple[str, tuple[int, int]]]] = {}
        for key in keys:
            try:
                path = resolve_key(self.root, key)
                st = os.stat(path, follow_symlinks=False)
            except UnsafePath as exc:
                log.warning("watcher %s: skipped %r: %s", self.location, key, exc)
                found[key] = None
                continue
            except OSError:
                found[key] = None
                continue
            found[key] = st if stat.S_ISREG(st.st_mode) else None
            if stat.S_ISDIR(st.st_mode):
                inside[key] = self._files_under(self.root / key)
        return found, inside

    def _files_under(self, folder: Path) -> list[tuple[str, tuple[int, int]]]:
        # A folder created and filled at once (pict-rs makes one per upload) is watched only
        # from when the watcher learns of it: files written before that have no event.
        files = []
        for parent, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not is_temporary(d)]
            for name in names:
                path = os.path.join(parent, name)
                key = self._key(path)
                if key is None or is_temporary(name):
                    continue
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append((key, (st.st_size, st.st_mtime_ns)))
        return files

    async def _settled(self) -> list[tuple[ObjectEvent, float]]:
        if not self._pending:
            return []
        stats, inside = await asyncio.to_thread(self._stat_all, list(self._pending))
        now = self._clock()
        for files in inside.values():
            for key, signature in files:
                if key not in self._pending and key not in stats:
                    self._pending[key] = _Pending(since=now, signature=signature)
        ready: list[tuple[ObjectEvent, float]] = []
        for key, st in stats.items():
            entry = self._pending.get(key)
            if entry is None:
                continue  # deleted meanwhile
            if st is None:
                del self._pending[key]  # gone, or a folder (its files are pending now)
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if signature != entry.signature:
                entry.signature = signature
                entry.since = now
                continue
            if now - entry.since < self.watch.settle_s:
                continue
            event = ObjectEvent(
                bucket=self.location,
                key=key,
                size=st.st_size,
                # The same tag LocalStore lists, so reconcile and watcher agree.
                etag=file_etag(st),
                store=StoreKind.FILE,
                event_name="watch",
            )
            ready.append((event, entry.since))
        return ready

    async def flush(self) -> int:
        """Produce scan requests for every settled file; the number produced."""
        ready = await self._settled()
        if not ready:
            return 0
        try:
            outcome = await self.intake.submit_events(
                [event for event, _ in ready], f"watch:{self.location}"
            )
        except BusError as exc:
            log.error("watcher %s: bus did not acknowledge, will retry: %s", self.location, exc)
            return 0
        for event, since in ready:
            entry = self._pending.get(event.key)
            # A change noted while producing keeps the file pending for another look.
            if entry is not None and entry.since == since:
                del self._pending[event.key]
        return outcome.produced

    async def run(self, stop: asyncio.Event, *, started: asyncio.Event | None = None) -> None:
        """Watch until ``stop`` is set."""
        if not self.root.is_dir():
            raise WatchRootError(
                f"watch root {self.root} is not a folder — check ingest.watch.roots "
                "(PICTGUARD_INGEST__WATCH__ROOTS) and the volume mount"
            )
        ticker = asyncio.create_task(self._tick(stop))
        try:
            async for changes in awatch(
                self.root,
                watch_filter=_watch_filter,
                debounce=200,
                step=50,
                stop_event=stop,
                force_polling=self.watch.force_polling or None,
                poll_delay_ms=self.watch.poll_delay_ms,
                recursive=True,
                # Wake up regularly: the first wake-up says the watch is in place.
                rust_timeout=500,
                yield_on_timeout=True,
                ignore_permission_denied=True,
            ):
                if started is not None and not started.is_set():
                    log.info("watching %s", self.root, extra={"root": self.location})
                    started.set()
                for change, path in changes:
                    self.note(change, path)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _tick(self, stop: asyncio.Event) -> None:
        interval = min(0.5, self.watch.settle_s / 4)
        while not stop.is_set():
            await asyncio.sleep(interval)
            await self.flush()


async def run_watch(
    settings: IngestConfig,
    bus: Bus,
    root: Path,
    stop: asyncio.Event,
    *,
    dedupe: DedupeWindow | None = None,
    started: asyncio.Event | None = None,
    scope: Scope | None = None,
) -> None:
    """Watch ``root`` recursively until ``stop``; scan requests use ``source=watch``."""
    watcher = FileWatcher(settings, bus, root, dedupe=dedupe, scope=scope)
    await watcher.run(stop, started=started)
