"""Ingest acts only where it is allowed and never on pictguard's own quarantine: events about
other buckets are dead-lettered, the watcher skips the quarantine folder and symlinks out
of its root, reconcile never lists the quarantine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from watchfiles import Change

from enforce.records import Records
from ingest.intake import NOT_ALLOWED, UNSAFE_KEY, Intake
from ingest.reconcile import reconcile_once
from ingest.sources import ObjectEvent
from ingest.watch import FileWatcher
from pictguard.roles import ingest_loops
from pictguard.runtime import open_runtime, run_all
from pictguard.settings import Settings, storage_scope
from pipeline.bus.memory import MemoryBus
from pipeline.context import Mode
from pipeline.events import DeadLetter, ScanRequest, Source, StoreKind, decode
from pipeline.settings import SettingsError
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from pipeline.topics import DEAD_LETTER, SCAN_BULK
from tests.ingest import payloads as p
from tests.ingest.helpers import make_settings
from tests.media import photo_jpeg
from tests.servers import S3Server, free_port

TOKEN = "minio-token-0123456789abcdef"


def configured(s3: S3Server, tmp_path: Path, *, storage: dict[str, Any], **ingest: Any) -> Settings:
    base = make_settings(None, s3, "scope.", tmp_path / "state", **ingest)
    merged = {**base.storage.model_dump(), **storage}
    return base.model_copy(update={"storage": type(base.storage).model_validate(merged)})


async def test_webhook_events_about_other_buckets_are_dead_lettered(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Before, a notification naming any bucket was scanned (and enforced on)."""
    port = free_port()
    settings = configured(
        s3_server,
        tmp_path,
        storage={"allowed_locations": ["s3://media"]},
        webhook={"enabled": True, "host": "127.0.0.1", "port": port, "minio_token": TOKEN},
        events={"enabled": False},
    )
    async with open_runtime(settings, mode=Mode.SINGLE) as rt:
        scans = rt.bus.consumer([settings.topic(SCAN_BULK)], "t")
        dead = rt.bus.consumer([settings.topic(DEAD_LETTER)], "t")
        await scans.start()
        await dead.start()
        loops = await ingest_loops(rt)
        running = asyncio.create_task(run_all(loops, rt.stop))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                for _ in range(200):
                    try:
                        if (await http.get("/healthz")).is_success:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                other = await http.post(
                    "/hooks/minio",
                    content=p.minio_event("victim-bucket", "x.jpg", size=10, etag="e1"),
                    headers=headers,
                )
                ours = await http.post(
                    "/hooks/minio",
                    content=p.minio_event("media", "a/ok.jpg", size=10, etag="e2"),
                    headers=headers,
                )
            requests = [decode(m.value, ScanRequest) for m in await scans.getmany(0, 100)]
            letters = [decode(m.value, DeadLetter) for m in await dead.getmany(0, 100)]
        finally:
            rt.stop.set()
            await asyncio.wait_for(running, 30)
    # Answered 200 (the sender must not retry it forever), but nothing scanned.
    assert other.status_code == 200, other.text
    assert (other.json()["accepted"], other.json()["refused"]) == (0, 1)
    assert ours.json()["accepted"] == 1
    assert [r.object.id for r in requests if r.object] == ["s3://media/a/ok.jpg"]
    [letter] = letters
    assert letter.reason == NOT_ALLOWED and "s3://victim-bucket/x.jpg" in letter.detail
    assert "storage.allowed_locations" in letter.detail


async def test_a_receiver_with_no_allowed_location_does_not_start(
    s3_server: S3Server, tmp_path: Path
) -> None:
    settings = configured(
        s3_server,
        tmp_path,
        storage={},
        webhook={"enabled": True, "host": "127.0.0.1", "port": free_port(), "minio_token": TOKEN},
    )
    async with open_runtime(settings, mode=Mode.SINGLE) as rt:
        with pytest.raises(SettingsError, match=r"storage\.allowed_locations"):
            await ingest_loops(rt)


async def test_folder_events_with_keys_leaving_their_root_are_dead_lettered(
    s3_server: S3Server, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    settings = configured(s3_server, tmp_path, storage={"allowed_locations": [str(media)]})
    bus = MemoryBus()
    dead = bus.consumer([settings.topic(DEAD_LETTER)], "t")
    await dead.start()
    intake = Intake(settings, bus, source=Source.WATCH, scope=storage_scope(settings))
    events = [
        ObjectEvent(bucket=str(media), key=key, store=StoreKind.FILE)
        for key in ("../secret.jpg", "a/../../b.jpg", "/etc/passwd", "ok/a.jpg")
    ]
    outcome = await intake.submit_events(events, "test")
    assert (outcome.produced, outcome.refused) == (1, 3)
    reasons = {decode(m.value, DeadLetter).reason for m in await dead.getmany(0, 10)}
    assert reasons == {UNSAFE_KEY}


async def test_watcher_skips_the_quarantine_folder_and_symlinks_out_of_its_root(
    s3_server: S3Server, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    (media / "uploads").mkdir(parents=True)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photo_jpeg(81, 320, 240))
    settings = configured(
        s3_server,
        tmp_path,
        storage={},
        watch={"enabled": True, "roots": [str(media)], "settle_s": 1.0},
    )
    settings.enforce.quarantine = str(media / ".." / "media" / "held")  # inside the root
    bus = MemoryBus()
    scans = bus.consumer([settings.topic(SCAN_BULK)], "t")
    await scans.start()
    now = [0.0]
    watcher = FileWatcher(settings, bus, media, clock=lambda: now[0], scope=storage_scope(settings))
    (media / "held" / "s3" / "b").mkdir(parents=True)
    written = {
        media / "uploads" / "new.jpg": photo_jpeg(82, 640, 480),
        media / "held" / "s3" / "b" / "copy.jpg": photo_jpeg(83, 640, 480),
    }
    for path, data in written.items():
        path.write_bytes(data)
    os.symlink(outside, media / "uploads" / "link.jpg")
    os.symlink(tmp_path, media / "uploads" / "up")
    for path in [*written, media / "uploads" / "link.jpg", media / "uploads" / "up" / "secret.jpg"]:
        watcher.note(Change.added, str(path))
    await watcher.flush()
    now[0] += 5
    assert await watcher.flush() == 1
    [request] = [decode(m.value, ScanRequest) for m in await scans.getmany(0, 10)]
    assert request.object is not None and request.object.key == "uploads/new.jpg"


async def test_reconcile_never_lists_the_quarantine(s3_server: S3Server, tmp_path: Path) -> None:
    media = tmp_path / "media"
    for key in ("2024/a.jpg", "quarantine/file/x/2024/a.jpg", "2024/b.jpg"):
        (media / key).parent.mkdir(parents=True, exist_ok=True)
        (media / key).write_bytes(photo_jpeg(len(key), 320, 240))
    settings = configured(
        s3_server, tmp_path, storage={}, reconcile={"enabled": True, "min_age_s": 0}
    )
    settings.enforce.quarantine = "quarantine/"
    bus = MemoryBus()
    scans = bus.consumer([settings.topic(SCAN_BULK)], "t")
    await scans.start()
    stores = Stores(settings.s3, scope=storage_scope(settings, [str(media)]))
    state = SqliteState(settings.storage.state_file)
    await state.start()
    ledger = Records(state)  # enforce's verdicts in one process: none yet
    await ledger.start()
    try:
        produced = await reconcile_once(
            settings,
            bus,
            stores,
            state,
            str(media),
            policy=settings.enforce.action_policy(),
            verdicts=ledger,
        )
    finally:
        await state.stop()
        await stores.close()
    keys = sorted(decode(m.value, ScanRequest).object.key for m in await scans.getmany(0, 10))  # type: ignore[union-attr]
    assert (produced, keys) == (2, ["2024/a.jpg", "2024/b.jpg"])
