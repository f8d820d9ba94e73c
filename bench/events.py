"""Event ingest throughput: MinIO notifications normalised and produced per second over Kafka.

What is timed is the ingest role's events stage doing its real work against a real broker:
consume raw MinIO Kafka-target messages from ``bucket-events`` (envelope, query-escaped keys),
parse, filter, dedupe, build scan requests, produce them to ``scan-requests.bulk`` with
``acks=all``, wait for every acknowledgement, commit. The clock starts when the first batch
reaches the handler (so consumer-group joining is not counted) and stops when the last
scan request is acknowledged.

For reference it also prints the same work without Kafka (parse + normalise + encode only).

Examples::

    python bench/events.py                 # starts a Tansu broker on loopback
    python bench/events.py --n 200000 --bootstrap kafka:9092
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.events_stage import EventsStage
from pictguard.settings import Settings, load_settings
from pipeline.bus.base import Message, Outgoing
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.bus.memory import MemoryBus
from pipeline.settings import KafkaSettings
from pipeline.stage import consume
from pipeline.topics import BUCKET_EVENTS, DEAD_LETTER, SCAN_BULK
from tests.ingest.payloads import minio_event


def pictrs_key(i: int) -> str:
    """A pict-rs ≥ 0.5.7 object key: ten two-hex folders, a 12-hex name, an extension."""
    digits = f"{i:020x}"
    folders = "/".join(digits[j : j + 2] for j in range(0, 20, 2))
    return f"{folders}/{i:012x}.webp"


def make_events(bucket: str, n: int) -> list[tuple[bytes, bytes]]:
    """(Kafka key, value) pairs exactly as MinIO's Kafka target publishes them."""
    out = []
    for i in range(n):
        key = pictrs_key(i)
        value = minio_event(
            bucket, key, size=10_000 + i, etag=f"{i:032x}", sequencer=f"{1_700_000_000 + i:016X}"
        )
        out.append((f"{bucket}/{key}".encode(), value))
    return out


class Timed:
    """Wraps the stage's handler: when the first batch arrived, how many were acknowledged."""

    def __init__(self, stage: EventsStage, target: int, done: asyncio.Event) -> None:
        self.stage = stage
        self.target = target
        self.done = done
        self.first: float | None = None
        self.last = 0.0
        self.handled = 0
        self.batches = 0

    async def handle(self, batch: Sequence[Message]) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        await self.stage.handle(batch)  # returns once the bus acknowledged every request
        self.last = time.perf_counter()
        self.handled += len(batch)
        self.batches += 1
        if self.handled >= self.target:
            self.done.set()


class NullBus(MemoryBus):
    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        return None


async def offline_rate(settings: Settings, events: list[tuple[bytes, bytes]], batch: int) -> float:
    stage = EventsStage(settings, NullBus())
    topic = settings.topic(BUCKET_EVENTS)
    messages = [Message(topic, v, k, offset=i) for i, (k, v) in enumerate(events)]
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        await stage.handle(messages[i : i + batch])
    return len(messages) / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="events to push through")
    parser.add_argument("--batch", type=int, default=1000, help="events per consume batch")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bootstrap", help="use this broker instead of starting Tansu")
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from tests.servers import start_broker

        broker = start_broker()
        bootstrap = broker.bootstrap
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = load_settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            partitions=args.partitions,
            max_poll_records=args.batch,
            consumer_overrides={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        ).model_dump(),
        ingest={"events": {"max_batch": args.batch}},
    )
    events = make_events("pictrs", args.n)
    try:
        offline = await offline_rate(settings, events[: min(len(events), 20_000)], args.batch)
        await create_topics(
            settings.kafka, [settings.topic(t) for t in (BUCKET_EVENTS, SCAN_BULK, DEAD_LETTER)]
        )
        bus = KafkaBus(settings.kafka)
        await bus.start()
        try:
            topic = settings.topic(BUCKET_EVENTS)
            t0 = time.perf_counter()
            for i in range(0, len(events), 5000):
                await bus.produce_many([Outgoing(topic, v, k) for k, v in events[i : i + 5000]])
            load_rate = len(events) / (time.perf_counter() - t0)

            stop, done = asyncio.Event(), asyncio.Event()
            timed = Timed(EventsStage(settings, bus), len(events), done)
            consumer = asyncio.create_task(
                consume(bus, [topic], "bench-events", timed, stop, max_records=args.batch)
            )
            waiter = asyncio.create_task(done.wait())
            await asyncio.wait({consumer, waiter}, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await consumer
            assert timed.first is not None
            elapsed = timed.last - timed.first
        finally:
            await bus.stop()
    finally:
        if broker is not None:
            broker.stop()

    rate = timed.handled / elapsed
    print(f"broker: {'Tansu (loopback)' if broker else bootstrap}, partitions {args.partitions}")
    print(f"loaded {len(events)} MinIO events into bucket-events at {load_rate:,.0f}/s")
    print(
        f"events stage: {timed.handled} events in {timed.batches} batches, {elapsed:.2f} s "
        f"→ {rate:,.0f} events/s normalised and produced (acks=all, committed)"
    )
    print(f"scan requests acknowledged: {timed.stage.produced}")
    print(f"same work without Kafka: {offline:,.0f} events/s (parse + filter + dedupe + encode)")
    print(f"target ≥ 5,000 events/s: {'met' if rate >= 5000 else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
