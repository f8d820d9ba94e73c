"""The filesystem watcher: a file is scanned once, after it is completely written."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from watchfiles import Change

from ingest.watch import FileWatcher, is_temporary, run_watch
from pictguard.settings import Settings, load_settings
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.events import ScanRequest, Source, StoreKind, decode
from pipeline.storage.local import LocalStore
from tests.ingest.helpers import scan_requests
from tests.mastodon_store import LOCAL, REMOTE, write_tree


def watching(settings: Settings, root: Path, settle_s: float) -> Settings:
    ingest = settings.ingest.model_dump()
    ingest["watch"] = {"enabled": True, "roots": [str(root)], "settle_s": settle_s}
    return settings.model_copy(update={"ingest": type(settings.ingest).model_validate(ingest)})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_growing_file_waits_until_it_stops_changing(
    settings: Settings, tmp_path: Path
) -> None:
    """Deterministic: the watcher's own clock, the real file system."""
    clock = Clock()
    bus = MemoryBus()
    consumer = bus.consumer([settings.topic("scan-requests.bulk")], "g")
    await consumer.start()
    watcher = FileWatcher(watching(settings, tmp_path, 2.0), bus, tmp_path, clock=clock)
    path = tmp_path / "1f" / "2e" / "0123456789ab.jpg"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        for chunk in range(5):
            f.write(b"x" * 1000)
            f.flush()
            os.utime(path, ns=(chunk * 10**9, chunk * 10**9))  # every write moves mtime
            watcher.note(Change.modified if chunk else Change.added, str(path))
            clock.now += 1.5  # less than settle_s between writes
            assert await watcher.flush() == 0
    clock.now += 1.0
    assert await watcher.flush() == 0  # unchanged, but not yet for settle_s
    clock.now += 2.0
    assert await watcher.flush() == 1
    assert watcher.pending == 0
    [message] = await consumer.getmany(0, 10)
    assert b'"size":5000' in message.value and b'"source":"watch"' in message.value


async def test_slow_chunked_write_is_scanned_once_after_it_completes(
    settings: Settings, kafka_bus: KafkaBus, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    configured = watching(settings, root, 1.5)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_watch(configured, kafka_bus, root, stop, started=started))
    await asyncio.wait_for(started.wait(), 10)
    try:
        slow = root / "1f" / "2e" / "3d" / "0123456789ab.webp"
        slow.parent.mkdir(parents=True)
        with slow.open("wb") as f:
            for _ in range(8):
                f.write(os.urandom(4096))
                f.flush()
                await asyncio.sleep(0.1)
        # Writers that rename into place: only the final name is scanned.
        tmp = root / ".upload-123.tmp"
        tmp.write_bytes(b"y" * 100)
        tmp.rename(root / "renamed.png")
        requests = await scan_requests(kafka_bus, configured, at_least=2)
    finally:
        stop.set()
        await task

    by_key = {r.object.key: r for r in requests if r.object}
    assert sorted(by_key) == ["1f/2e/3d/0123456789ab.webp", "renamed.png"]
    assert len(requests) == 2
    ref = by_key["1f/2e/3d/0123456789ab.webp"].object
    assert ref is not None and ref.store is StoreKind.FILE and ref.size == 8 * 4096
    assert by_key["renamed.png"].source is Source.WATCH
    listed = {info.key: info async for info in LocalStore(root).list()}
    assert ref.etag == listed[ref.key].etag  # reconcile and watcher name versions alike
    assert ref.bucket == str(root.resolve())


def test_temporary_names() -> None:
    assert is_temporary(".upload.jpg")
    assert is_temporary("a.jpg.part")
    assert is_temporary("a.JPG.tmp")
    assert is_temporary("a.jpg.pictguard-meta.json")
    assert not is_temporary("0123456789ab.jpg")
    assert not is_temporary("4b6a7c38-2d6e-4c1e-9c1a-0f1e2d3c4b5a")


async def test_files_in_a_new_folder_are_found_from_the_folder_event(
    settings: Settings, tmp_path: Path
) -> None:
    """A folder created and filled at once: the watch on it starts after its first files
    were written, so they have no event of their own; the folder's event finds them."""
    clock = Clock()
    bus = MemoryBus()
    consumer = bus.consumer([settings.topic("scan-requests.bulk")], "g")
    await consumer.start()
    watcher = FileWatcher(watching(settings, tmp_path, 1.0), bus, tmp_path, clock=clock)
    folder = tmp_path / "2024" / "06"
    folder.mkdir(parents=True)
    for name in ("a.jpg", "b.png", ".partial-upload", "c.webp.tmp"):
        (folder / name).write_bytes(b"x" * 100)
    (folder / "deeper").mkdir()
    (folder / "deeper" / "d.gif").write_bytes(b"y" * 10)
    watcher.note(Change.added, str(tmp_path / "2024"))  # the only event that came
    assert await watcher.flush() == 0  # the folder's files are pending now
    clock.now += 2.0
    assert await watcher.flush() == 3
    requests = [decode(m.value, ScanRequest) for m in await consumer.getmany(0, 10)]
    keys = sorted(r.object.key for r in requests if r.object)
    assert keys == ["2024/06/a.jpg", "2024/06/b.png", "2024/06/deeper/d.gif"]


@pytest.mark.parametrize(
    ("media", "watched"),
    [
        ("remote", "cache"),  # a watcher on public/system/cache sees remote media
        ("remote", "cache/media_attachments"),
        ("local", "cache"),  # …which `local` leaves out, wherever the watch starts
        ("local", "media_attachments"),
    ],
)
async def test_a_watcher_inside_mastodons_store_knows_local_from_remote_media(
    tmp_path: Path, media: str, watched: str
) -> None:
    system = tmp_path / "public" / "system"
    write_tree(system)
    root = system / watched
    settings = load_settings(
        storage={"state_dir": str(tmp_path / "state")},
        ingest={"preset": "mastodon", "mastodon_media": media},
    )
    clock = Clock()
    bus = MemoryBus()
    consumer = bus.consumer([settings.topic("scan-requests.bulk")], "g")
    await consumer.start()
    watcher = FileWatcher(watching(settings, root, 1.0), bus, root, clock=clock)
    for path in root.rglob("*"):
        if path.is_file():
            watcher.note(Change.added, str(path))
    assert await watcher.flush() == 0  # pending until settled
    clock.now += 2.0
    await watcher.flush()
    requests = [decode(m.value, ScanRequest) for m in await consumer.getmany(0, 10)]
    found = {f"{watched}/{r.object.key}" for r in requests if r.object}
    kind = REMOTE if media == "remote" else LOCAL
    assert found == {k for k in kind if k.startswith(f"{watched}/")}
