"""The raw bucket-events topic (MinIO and Ceph Kafka targets) through the real broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ingest.events_stage import run_events_stage
from pictguard.settings import Settings
from pipeline.bus.base import Outgoing
from pipeline.bus.kafka import KafkaBus
from pipeline.events import Source
from pipeline.topics import BUCKET_EVENTS
from tests.ingest import payloads as p
from tests.ingest.helpers import dead_letters, put_objects, scan_requests
from tests.servers import S3Server

MINIO_KEY = "media/2024/my photo+1.jpg"  # travels as media%2F2024%2Fmy+photo%2B1.jpg
CEPH_KEY = "ceph dir/raw name+x.jpg"  # travels raw


async def test_minio_and_ceph_events_each_object_scanned_once(
    settings: Settings, kafka_bus: KafkaBus, s3_server: S3Server, bucket: str
) -> None:
    stored = put_objects(s3_server, bucket, [MINIO_KEY, CEPH_KEY, "gone.jpg"])
    topic = settings.topic(BUCKET_EVENTS)
    m, c = stored[MINIO_KEY], stored[CEPH_KEY]
    minio = p.minio_event(bucket, MINIO_KEY, size=m.size, etag=m.etag)
    ceph = p.ceph_event(bucket, CEPH_KEY, size=str(c.size), etag=c.etag, event_id="1714.1.abc")
    removal = p.minio_event(bucket, "gone.jpg", size=0, etag="", event="s3:ObjectRemoved:Delete")
    # At-least-once delivery: every notification arrives twice. Ceph messages have no key.
    records = [
        Outgoing(topic, minio, p.minio_kafka_key(bucket, MINIO_KEY)),
        Outgoing(topic, ceph, None),
        Outgoing(topic, removal, p.minio_kafka_key(bucket, "gone.jpg")),
        Outgoing(topic, p.aws_test_event(bucket), None),
        Outgoing(topic, b"\x00 definitely not json", b"junk"),
        Outgoing(topic, minio, p.minio_kafka_key(bucket, MINIO_KEY)),
        Outgoing(topic, ceph, None),
    ]
    await kafka_bus.produce_many(records)

    stop = asyncio.Event()
    stage = asyncio.create_task(run_events_stage(settings, kafka_bus, stop))
    try:
        requests = await scan_requests(kafka_bus, settings, at_least=2)
        letters = await dead_letters(kafka_bus, settings, at_least=1)
    finally:
        stop.set()
        await stage

    refs = sorted((r.object for r in requests if r.object), key=lambda r: r.key)
    assert [(r.bucket, r.key) for r in refs] == [(bucket, CEPH_KEY), (bucket, MINIO_KEY)]
    assert all(r.source is Source.EVENT for r in requests)
    client: Any = s3_server.client()
    for ref in refs:
        head = client.head_object(Bucket=ref.bucket, Key=ref.key)  # the decoded key exists
        assert ref.size == head["ContentLength"]
        assert ref.etag == head["ETag"].strip('"')
    [letter] = letters
    assert letter.reason == "not_json"
    assert letter.source_topic == topic and letter.source_key == "junk"
    assert letter.offset is not None and letter.payload.startswith(b"\x00 definitely")


async def test_unknown_event_source_is_dead_lettered_and_the_stage_keeps_going(
    settings: Settings, kafka_bus: KafkaBus, s3_server: S3Server, bucket: str
) -> None:
    stored = put_objects(s3_server, bucket, ["after.jpg"])
    topic = settings.topic(BUCKET_EVENTS)
    odd = p.ceph_record(bucket, "x.jpg", size=1, etag="e")
    odd["eventSource"] = "seaweedfs:s3"
    s = stored["after.jpg"]
    await kafka_bus.produce_many(
        [
            Outgoing(topic, json.dumps({"Records": [odd]}).encode(), None),
            Outgoing(topic, p.minio_event(bucket, "after.jpg", size=s.size, etag=s.etag), None),
        ]
    )
    stop = asyncio.Event()
    stage = asyncio.create_task(run_events_stage(settings, kafka_bus, stop))
    try:
        requests = await scan_requests(kafka_bus, settings, at_least=1)
        letters = await dead_letters(kafka_bus, settings, at_least=1)
    finally:
        stop.set()
        await stage
    assert [r.object.key for r in requests if r.object] == ["after.jpg"]
    assert [letter.reason for letter in letters] == ["unknown_shape"]
    assert "seaweedfs:s3" in letters[0].detail
