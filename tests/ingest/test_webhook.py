"""The HTTP receiver over a real socket: MinIO, Ceph and B2 deliveries into the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from ingest.sources.b2 import SIGNATURE_HEADER, sign
from ingest.webhook import run_webhook
from pictguard.settings import Settings
from pipeline.bus.base import Bus, BusError, Outgoing
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from tests.ingest import payloads as p
from tests.ingest.helpers import dead_letters, put_objects, scan_requests
from tests.servers import S3Server, free_port

MINIO_TOKEN = "minio-token-0123456789abcdef"
CEPH_TOKEN = "ceph-token-0123456789abcdef"
B2_SECRET = "b2-signing-secret-0123456789"


def hook_settings(settings: Settings, **hook: Any) -> Settings:
    webhook = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": free_port(),
        "minio_token": MINIO_TOKEN,
        "ceph_token": CEPH_TOKEN,
        "b2_secret": B2_SECRET,
    }
    webhook.update(hook)
    ingest = settings.ingest.model_dump()
    ingest["webhook"] = webhook
    return settings.model_copy(update={"ingest": type(settings.ingest).model_validate(ingest)})


@contextlib.asynccontextmanager
async def serve(settings: Settings, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    """The receiver on a real socket, and a client for it."""
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_webhook(settings, bus, stop, started=started))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    hook = settings.ingest.webhook
    try:
        async with httpx.AsyncClient(base_url=f"http://{hook.host}:{hook.port}") as client:
            yield client
    finally:
        stop.set()
        await task


@pytest.fixture
async def hooked(settings: Settings) -> Settings:
    return hook_settings(settings)


@pytest.fixture
async def client(hooked: Settings, kafka_bus: KafkaBus) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(hooked, kafka_bus) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_minio_webhook(
    hooked: Settings,
    kafka_bus: KafkaBus,
    client: httpx.AsyncClient,
    s3_server: S3Server,
    bucket: str,
) -> None:
    key = "media/2024/a photo+1.jpg"
    s = put_objects(s3_server, bucket, [key])[key]
    body = p.minio_event(bucket, key, size=s.size, etag=s.etag)

    assert (await client.head("/hooks/minio")).status_code == 200  # MinIO's liveness probe
    missing = await client.post("/hooks/minio", content=body)
    assert missing.status_code == 401
    assert (
        await client.post("/hooks/minio", content=body, headers=bearer("nope"))
    ).status_code == 403

    first = await client.post("/hooks/minio", content=body, headers=bearer(MINIO_TOKEN))
    again = await client.post("/hooks/minio", content=body, headers=bearer(MINIO_TOKEN))
    assert (first.status_code, first.json()["accepted"]) == (200, 1)
    assert (again.status_code, again.json()["accepted"], again.json()["repeats"]) == (200, 0, 1)

    bad = await client.post("/hooks/minio", content=b"{oops", headers=bearer(MINIO_TOKEN))
    assert bad.status_code == 400

    [request] = await scan_requests(kafka_bus, hooked, at_least=1)
    assert request.object is not None and (request.object.bucket, request.object.key) == (
        bucket,
        key,
    )
    [letter] = await dead_letters(kafka_bus, hooked, at_least=1)
    assert (letter.reason, letter.source_topic, letter.payload) == (
        "not_json",
        "webhook:/hooks/minio",
        b"{oops",
    )


async def test_ceph_push_endpoint(
    hooked: Settings,
    kafka_bus: KafkaBus,
    client: httpx.AsyncClient,
    s3_server: S3Server,
    bucket: str,
) -> None:
    key = "uploads/raw key with spaces+plus.png"
    s = put_objects(s3_server, bucket, [key])[key]
    body = p.ceph_event(bucket, key, size=str(s.size), etag=s.etag, event_id="1714.2.def")
    assert (await client.post("/hooks/ceph", content=body)).status_code == 401
    wrong = await client.post("/hooks/ceph", params={"token": "x"}, content=body)
    assert wrong.status_code == 403
    for _ in range(2):
        ok = await client.post("/hooks/ceph", params={"token": CEPH_TOKEN}, content=body)
        assert ok.status_code == 200
    [request] = await scan_requests(kafka_bus, hooked, at_least=1)
    assert request.object is not None
    assert (request.object.key, request.object.size) == (key, s.size)


async def test_b2_webhook_signature(
    hooked: Settings,
    kafka_bus: KafkaBus,
    client: httpx.AsyncClient,
    s3_server: S3Server,
    bucket: str,
) -> None:
    keys = ["b2/one.jpg", "b2/two words.jpg"]
    stored = put_objects(s3_server, bucket, keys)
    body = p.b2_body(
        *(
            p.b2_event(bucket, k, size=stored[k].size, event_id=f"ev-{i}")
            for i, k in enumerate(keys)
        )
    )
    test = p.b2_test_body()

    unsigned = await client.post("/hooks/b2", content=body)
    assert unsigned.status_code == 401
    forged = await client.post(
        "/hooks/b2", content=body, headers={SIGNATURE_HEADER: sign("not-the-secret", body)}
    )
    assert forged.status_code == 403
    tampered = await client.post(
        "/hooks/b2", content=body + b" ", headers={SIGNATURE_HEADER: sign(B2_SECRET, body)}
    )
    assert tampered.status_code == 403
    tested = await client.post(
        "/hooks/b2", content=test, headers={SIGNATURE_HEADER: sign(B2_SECRET, test)}
    )
    assert (tested.status_code, tested.json()["ignored"]) == (200, 1)
    for _ in range(2):
        ok = await client.post(
            "/hooks/b2", content=body, headers={SIGNATURE_HEADER: sign(B2_SECRET, body)}
        )
        assert ok.status_code == 200
    requests = await scan_requests(kafka_bus, hooked, at_least=2)
    assert sorted(r.object.key for r in requests if r.object) == sorted(keys)


async def test_concurrent_duplicate_deliveries_produce_one_request(
    hooked: Settings,
    kafka_bus: KafkaBus,
    client: httpx.AsyncClient,
    s3_server: S3Server,
    bucket: str,
) -> None:
    s = put_objects(s3_server, bucket, ["race.jpg"])["race.jpg"]
    body = p.minio_event(bucket, "race.jpg", size=s.size, etag=s.etag)
    answers = await asyncio.gather(
        *(client.post("/hooks/minio", content=body, headers=bearer(MINIO_TOKEN)) for _ in range(12))
    )
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["accepted"] for a in answers) == 1
    assert len(await scan_requests(kafka_bus, hooked, at_least=1)) == 1


async def test_endpoints_without_a_secret_are_off_and_bodies_are_capped(
    settings: Settings, kafka_bus: KafkaBus
) -> None:
    only_minio = hook_settings(settings, ceph_token=None, b2_secret=None, max_body_bytes=1000)
    async with serve(only_minio, kafka_bus) as client:
        assert (
            await client.post("/hooks/ceph", params={"token": "x"}, content=b"{}")
        ).status_code == 404
        assert (await client.post("/hooks/b2", content=b"{}")).status_code == 404
        big = await client.post("/hooks/minio", content=b"x" * 5000, headers=bearer(MINIO_TOKEN))
        assert big.status_code == 413
        assert (await client.get("/healthz")).json() == {"status": "ok"}


class RefusingBus(MemoryBus):
    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        raise BusError("broker unreachable (test)")


async def test_unacknowledged_produce_answers_503_so_the_store_retries(
    settings: Settings, s3_server: S3Server, bucket: str
) -> None:
    s = put_objects(s3_server, bucket, ["k.jpg"])["k.jpg"]
    body = p.minio_event(bucket, "k.jpg", size=s.size, etag=s.etag)
    bus = RefusingBus()
    async with serve(hook_settings(settings), bus) as client:
        for _ in range(2):  # not remembered as done: the retry is tried again
            answer = await client.post("/hooks/minio", content=body, headers=bearer(MINIO_TOKEN))
            assert answer.status_code == 503
            assert "retry" in json.loads(answer.content)["error"]
