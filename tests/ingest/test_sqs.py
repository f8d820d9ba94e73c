"""The SQS poller against moto's SQS: raw S3 records, SNS-wrapped, EventBridge, TestEvent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session

from ingest.sqs import SqsConfigError, SqsPoller, run_sqs, sqs_client_kwargs
from pictguard.settings import Settings
from pipeline.bus.base import Bus, BusError, Outgoing
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from tests.ingest import payloads as p
from tests.ingest.helpers import dead_letters, put_objects, scan_requests
from tests.servers import S3Server


def sqs(s3_server: S3Server) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
def queue(s3_server: S3Server) -> str:
    url: str = sqs(s3_server).create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    return url


def with_queue(settings: Settings, s3_server: S3Server, queue: str, **extra: Any) -> Settings:
    ingest = settings.ingest.model_dump()
    ingest["sqs"] = {
        "enabled": True,
        "queue_url": queue,
        "endpoint_url": s3_server.endpoint,
        "wait_time_s": 1,
        **extra,
    }
    return settings.model_copy(update={"ingest": type(settings.ingest).model_validate(ingest)})


def waiting(client: Any, queue: str) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_every_aws_shape_is_scanned_once_and_deleted_after_produce(
    settings: Settings, kafka_bus: KafkaBus, s3_server: S3Server, bucket: str, queue: str
) -> None:
    keys = ["raw/Happy Face.jpg", "sns/two words.png", "eventbridge/x y.webp"]
    st = put_objects(s3_server, bucket, keys)
    raw = p.aws_event(bucket, keys[0], size=st[keys[0]].size, etag=st[keys[0]].etag)
    wrapped = p.sns_wrap(p.aws_event(bucket, keys[1], size=st[keys[1]].size, etag=st[keys[1]].etag))
    bridged = p.eventbridge_event(bucket, keys[2], size=st[keys[2]].size, etag=st[keys[2]].etag)
    bodies = [
        p.aws_test_event(bucket),
        p.sns_wrap(p.aws_test_event(bucket)),
        raw,
        wrapped,
        bridged,
        raw,  # at-least-once: a second delivery of each
        wrapped,
        bridged,
        b"<xml>not an S3 notification</xml>",
    ]
    client = sqs(s3_server)
    for body in bodies:
        client.send_message(QueueUrl=queue, MessageBody=body.decode())
    configured = with_queue(settings, s3_server, queue)

    stop = asyncio.Event()
    poller = asyncio.create_task(run_sqs(configured, kafka_bus, stop))
    try:
        requests = await scan_requests(kafka_bus, configured, at_least=3)
        letters = await dead_letters(kafka_bus, configured, at_least=1)
        for _ in range(100):
            if waiting(client, queue) == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await poller

    assert sorted(r.object.key for r in requests if r.object) == sorted(keys)
    assert [letter.reason for letter in letters] == ["not_json"]
    assert letters[0].source_topic == "sqs:" + queue.rsplit("/", 1)[-1]
    assert waiting(client, queue) == 0  # deleted, dead-lettered one included


class RefusingBus(MemoryBus):
    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        raise BusError("broker unreachable (test)")


async def test_messages_stay_in_the_queue_when_produce_fails(
    settings: Settings, s3_server: S3Server, bucket: str, queue: str
) -> None:
    st = put_objects(s3_server, bucket, ["k.jpg"])["k.jpg"]
    client = sqs(s3_server)
    client.send_message(
        QueueUrl=queue,
        MessageBody=p.aws_event(bucket, "k.jpg", size=st.size, etag=st.etag).decode(),
    )
    configured = with_queue(settings, s3_server, queue, visibility_timeout_s=0)
    bus: Bus = RefusingBus()
    async with get_session().create_client(**sqs_client_kwargs(configured)) as aws:
        poller = SqsPoller(configured, bus, aws)
        with pytest.raises(BusError):
            await poller.poll_once()
        # Still there; a healthy bus then takes it and the message is deleted.
        healthy = MemoryBus()
        poller = SqsPoller(configured, healthy, aws)
        handled = 0
        for _ in range(5):
            handled += await poller.poll_once()
            if handled:
                break
    assert handled == 1
    assert waiting(client, queue) == 0


async def test_missing_queue_is_reported_with_what_to_check(
    settings: Settings, s3_server: S3Server
) -> None:
    configured = with_queue(settings, s3_server, s3_server.endpoint + "/123456789012/no-such-queue")
    with pytest.raises(SqsConfigError, match=r"ingest\.sqs\.queue_url"):
        await run_sqs(configured, MemoryBus(), asyncio.Event())
