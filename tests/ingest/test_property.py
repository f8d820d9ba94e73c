"""Property: whatever arrives, it becomes a scan request, a dead letter or a 4xx — never a crash.

Nothing is dropped silently either: a 200 accounts for every payload (accepted, repeat,
filtered, ignored with a reason, or a removal).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.events_stage import EventsStage
from ingest.sources import parse
from ingest.sources.b2 import SIGNATURE_HEADER, sign
from ingest.webhook import run_webhook
from pictguard.settings import Settings, load_settings
from pipeline.bus.base import Message, Outgoing
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.events import DeadLetter, ScanRequest, decode
from pipeline.topics import BUCKET_EVENTS, DEAD_LETTER, SCAN_BULK
from tests.ingest import payloads as p
from tests.ingest.helpers import dead_letters, scan_requests
from tests.servers import free_port

TOKEN = "property-token-0123456789"
SECRET = "property-secret-0123456789"


class RecordingBus(MemoryBus):
    """Keeps what was produced; thread-safe enough for one writer and a reader after it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Outgoing] = []

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        self.records.extend(records)

    def take(self) -> list[Outgoing]:
        out, self.records = self.records, []
        return out


def _settings() -> Settings:
    return load_settings(
        kafka={"topic_prefix": "prop."},
        ingest={
            "dedupe_window_s": 0,  # every example stands alone
            "webhook": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": free_port(),
                "minio_token": TOKEN,
                "ceph_token": TOKEN,
                "b2_secret": SECRET,
                "max_body_bytes": 256 * 1024,
            },
        },
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Settings, RecordingBus]]:
    """The receiver on a real socket, on its own loop in a thread (hypothesis is sync)."""
    config = _settings()
    bus = RecordingBus()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(run_webhook(config, bus, stop, started=started))
        await started.wait()
        ready.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield config, bus
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


# -- strategies ---------------------------------------------------------------------------

ETAG = "d41d8cd98f00b204e9800998ecf8427e"
VALID = [
    p.minio_event("pics", "a b/c.jpg", size=1, etag=ETAG),
    p.aws_event("pics", "a b/c.jpg", size=1, etag=ETAG),
    p.ceph_event("pics", "a b/c.jpg", size="1", etag=ETAG),
    p.b2_body(p.b2_event("pics", "a.jpg", size=1)),
    p.eventbridge_event("pics", "a.jpg", size=1, etag=ETAG),
    p.sns_wrap(p.aws_event("pics", "a.jpg", size=1, etag=ETAG)),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real payload with one field anywhere replaced by any JSON value."""
    doc = json.loads(draw(st.sampled_from(VALID)))
    path = draw(st.sampled_from(_paths(doc)[1:]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


any_payload = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated(),
    st.sampled_from(VALID),
)


def _accounted(answer: dict[str, Any]) -> bool:
    counted = ("accepted", "repeats", "filtered", "ignored", "removed")
    return sum(int(answer[k]) for k in counted) > 0 or "dead_lettered" in answer


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=any_payload, route=st.sampled_from(["minio", "ceph", "b2"]))
def test_webhook_any_bytes(server: tuple[Settings, RecordingBus], body: bytes, route: str) -> None:
    config, bus = server
    hook = config.ingest.webhook
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if route == "b2":
        headers = {SIGNATURE_HEADER: sign(SECRET, body)}
    bus.take()
    answer = httpx.post(
        f"http://{hook.host}:{hook.port}/hooks/{route}", content=body, headers=headers
    )
    produced = bus.take()
    letters = [r for r in produced if r.topic == config.topic(DEAD_LETTER)]
    requests = [r for r in produced if r.topic == config.topic(SCAN_BULK)]
    for record in letters:
        assert record.value is not None
        assert decode(record.value, DeadLetter).reason != "internal_error"
    for record in requests:
        assert record.value is not None
        decode(record.value, ScanRequest)
    assert answer.status_code in (200, 400, 403), answer.text
    if answer.status_code == 403:
        # Only B2 (signed, so never a wrong token here): every event outside the time window.
        assert route == "b2" and "eventTimestamp" in answer.text and not produced
    elif answer.status_code == 400:
        assert len(letters) == 1 and not requests
    else:
        assert _accounted(answer.json()), answer.text
        assert len(requests) == answer.json()["accepted"]


@settings(max_examples=150, deadline=None)
@given(bodies=st.lists(any_payload, min_size=1, max_size=5), keyed=st.booleans())
def test_raw_topic_any_bytes(bodies: list[bytes], keyed: bool) -> None:
    config = _settings()
    topic = config.topic(BUCKET_EVENTS)

    async def run() -> list[Outgoing]:
        bus = RecordingBus()
        stage = EventsStage(config, bus)
        batch = [
            Message(topic, body, key=b"k" if keyed else None, partition=0, offset=i)
            for i, body in enumerate(bodies)
        ]
        await stage.handle(batch)
        return bus.take()

    produced = asyncio.run(run())
    letters = [
        decode(r.value or b"", DeadLetter) for r in produced if r.topic.endswith(DEAD_LETTER)
    ]
    lettered_offsets = {letter.offset for letter in letters}
    requests = [r for r in produced if r.topic.endswith(SCAN_BULK)]
    for i, body in enumerate(bodies):
        result = parse(body, source="auto")
        if result.error is not None:
            assert result.error.reason != "internal_error"  # a parser bug, not bad input
            assert i in lettered_offsets  # kept for the admin, with the reason
        else:
            assert result.events or result.ignored or result.removals  # never silent
    # Repeats within the batch (same object or same event id) are produced once.
    events = sum(len(parse(b, source="auto").events) for b in bodies)
    assert (len(requests) > 0) == (events > 0) and len(requests) <= events


NASTY = [
    b"",
    b"\x00\xff" * 100,
    b"[" * 50000,
    b"null",
    b'{"Records": null}',
    b'{"Records": [null]}',
    b'{"EventName": "s3:ObjectCreated:Put", "Key": "b/k", "Records": [{}]}',
    json.dumps(
        {"Records": [{"eventSource": "ceph:s3", "s3": {"object": {"key": "\ud800"}}}]}
    ).encode(),
]


async def test_nasty_messages_on_the_real_topic(settings: Settings, kafka_bus: KafkaBus) -> None:
    """The same through the broker: every message dead-lettered, the good one still scanned."""
    from ingest.events_stage import run_events_stage

    topic = settings.topic(BUCKET_EVENTS)
    good = p.minio_event("pics", "ok.jpg", size=1, etag=ETAG)
    await kafka_bus.produce_many([Outgoing(topic, b, None) for b in [*NASTY, good]])
    stop = asyncio.Event()
    stage = asyncio.create_task(run_events_stage(settings, kafka_bus, stop))
    try:
        letters = await dead_letters(kafka_bus, settings, at_least=len(NASTY))
        requests = await scan_requests(kafka_bus, settings, at_least=1)
    finally:
        stop.set()
        await stage
    assert len(letters) == len(NASTY)
    assert [r.object.key for r in requests if r.object] == ["ok.jpg"]
