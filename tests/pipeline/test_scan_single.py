"""End to end in one process: list a moto bucket or a folder, classify, enforce, summarise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pictguard.scan import run_scan
from pipeline.events import Decision
from pipeline.state.sqlite import SqliteState
from tests.corpus import make_corpus
from tests.servers import S3Server, bucket_keys
from tests.single_process import block, scan_settings


async def test_bucket_scan_quarantines_blocklisted_and_reports_errors(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(520, blocked=12, corrupt=8, non_images=9)
    corpus.upload(client, bucket)
    client.create_bucket(Bucket=f"{bucket}-q")
    settings = scan_settings(
        s3_server, tmp_path, on_flag_csam="quarantine", quarantine=f"s3://{bucket}-q/held/"
    )
    await block(settings, corpus)

    summary = await run_scan(settings, f"s3://{bucket}")

    assert summary.completed
    assert summary.scanned == len(corpus.objects)  # one final outcome per object
    assert summary.decisions[Decision.FLAG_CSAM] == len(corpus.blocked)
    assert summary.decisions[Decision.ERROR] == len(corpus.corrupt) + len(corpus.non_images)
    assert summary.decisions[Decision.ALLOW] == len(corpus.clean)
    remaining = bucket_keys(client, bucket)
    assert remaining == set(corpus.objects) - corpus.blocked  # clean and failed untouched
    assert bucket_keys(client, f"{bucket}-q") == {f"held/s3/{bucket}/{k}" for k in corpus.blocked}
    for key in corpus.blocked:
        copy = f"held/s3/{bucket}/{key}"  # the copy's key names its source bucket
        body = client.get_object(Bucket=f"{bucket}-q", Key=copy)["Body"].read()
        assert body == corpus.objects[key]
    reasons = {v.object.key: v.reason for v, _ in summary.notable if v.object}
    assert {reasons[k] for k in corpus.corrupt} == {"undecodable"}
    assert {reasons[k] for k in corpus.non_images} == {"unsupported_type"}


async def test_delete_policy_and_dry_run(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(40, blocked=5, corrupt=2, non_images=2)
    corpus.upload(client, bucket)

    dry = scan_settings(s3_server, tmp_path / "dry", on_flag_csam="delete", dry_run=True)
    await block(dry, corpus)
    summary = await run_scan(dry, f"s3://{bucket}")
    assert summary.decisions[Decision.FLAG_CSAM] == 5
    assert bucket_keys(client, bucket) == set(corpus.objects)  # dry run touched nothing
    assert summary.actions == {"delete:dry_run": 5, "report:dry_run": 4}

    real = scan_settings(s3_server, tmp_path / "real", on_flag_csam="delete")
    await block(real, corpus)
    summary = await run_scan(real, f"s3://{bucket}")
    assert summary.actions["delete:done"] == 5
    assert bucket_keys(client, bucket) == set(corpus.objects) - corpus.blocked


async def test_folder_scan_quarantines_into_a_folder(tmp_path: Path, s3_server: S3Server) -> None:
    media = tmp_path / "media"
    corpus = make_corpus(30, blocked=3, corrupt=2, non_images=1, prefix="files/")
    for key, data in corpus.objects.items():
        (media / key).parent.mkdir(parents=True, exist_ok=True)
        (media / key).write_bytes(data)
    settings = scan_settings(
        s3_server, tmp_path / "state", on_flag_csam="quarantine", quarantine=str(tmp_path / "q")
    )
    await block(settings, corpus)

    summary = await run_scan(settings, str(media))

    assert summary.scanned == 30
    assert summary.decisions[Decision.FLAG_CSAM] == 3
    for key in corpus.blocked:
        assert not (media / key).exists()
        copy = tmp_path / "q" / "file" / str(media.resolve()).lstrip("/") / key
        assert copy.read_bytes() == corpus.objects[key]
    for key in corpus.clean:
        assert (media / key).read_bytes() == corpus.objects[key]


@pytest.mark.parametrize("resume", [True])
async def test_interrupted_backfill_resumes_after_its_checkpoint(
    s3_server: S3Server, bucket: str, tmp_path: Path, resume: bool
) -> None:
    from ingest.backfill import Backfill, checkpoint_name
    from pipeline.bus.memory import MemoryBus
    from pipeline.storage.locations import Stores, parse_location

    client: Any = s3_server.client()
    corpus = make_corpus(60, blocked=0, corrupt=0, non_images=0)
    corpus.upload(client, bucket)
    settings = scan_settings(s3_server, tmp_path)
    settings.ingest.batch_size = 10
    settings.ingest.checkpoint_every = 10
    location = parse_location(f"s3://{bucket}")
    state = SqliteState(settings.storage.state_file)
    await state.start()
    stores = Stores(settings.s3)
    bus = MemoryBus(capacity=1000)
    consumer = bus.consumer([settings.topic("scan-requests.bulk")], "g")
    await consumer.start()
    try:
        import asyncio

        stop = asyncio.Event()
        produced: list[int] = []

        def stop_after_30(n: int) -> None:
            produced.append(n)
            if sum(produced) >= 30:
                stop.set()  # as if the process were interrupted

        first = Backfill(
            bus, settings, stores.for_location(location), location, state, on_produced=stop_after_30
        )
        r1 = await first.run(stop)
        assert not r1.completed
        checkpoint = await state.get_checkpoint(checkpoint_name(location))
        assert checkpoint is not None
        second = Backfill(bus, settings, stores.for_location(location), location, state)
        r2 = await second.run(resume=resume)
        assert r2.completed and r2.resumed_after == checkpoint
        got = await consumer.getmany(0, 1000)
        seen = [m.key.decode() for m in got if m.key]
        assert sorted(set(seen)) == sorted(f"s3://{bucket}/{k}" for k in corpus.objects)
        assert len(seen) == len(set(seen))  # nothing listed twice across the restart
        assert await state.get_checkpoint(checkpoint_name(location)) is None
    finally:
        await consumer.stop()
        await stores.close()
        await state.stop()
