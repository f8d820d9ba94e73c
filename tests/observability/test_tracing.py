"""One upload is one trace: pict-rs → validate_api → Kafka → classify → Kafka → enforce.

The roles run in this process on a real Kafka-protocol broker (Tansu) and a real S3 server
(moto), with every span going to an in-memory exporter. A pict-rs-style upload is sent over
real HTTP to validate_api; two bucket objects go the bulk way, as a backfill sends them.
The scenario runs once per module; each test reads the spans it left.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pictguard.roles import build_api, classify_loops, enforce_loops
from pictguard.runtime import open_runtime
from pictguard.settings import load_settings
from pipeline.bus.base import Outgoing
from pipeline.bus.kafka import create_topics
from pipeline.context import Mode
from pipeline.events import Lane, ObjectRef, ScanRequest, Source, StoreKind, encode
from pipeline.metrics import Metrics, use_metrics
from pipeline.telemetry import instrument_app, setup_tracing
from pipeline.topics import SCAN_BULK
from pipeline.tracing import new_trace_headers, tracer
from tests.enforce.receivers import HttpReceiver, http_receiver
from tests.observability.helpers import MAGENTA, MODEL, Spans, png, samples, until, value
from tests.servers import Broker, S3Server, free_port
from validate_api.role import serve_http

CLIENT = "pictrs"
OBJECTS = {"media/a.png": png(MAGENTA), "media/b.png": png((240, 20, 235))}
UPLOAD = png((235, 5, 250))


@dataclass
class Run:
    spans: Spans
    prefix: str
    bucket: str
    status: int
    hook: list[dict[str, str]]
    metrics: str


async def scenario(broker: Broker, s3: S3Server, tmp: Path, hook: HttpReceiver) -> Run:
    prefix = f"o{uuid.uuid4().hex[:8]}."
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client: Any = s3.client()
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=f"{bucket}-q")
    for key, data in OBJECTS.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    port = free_port()
    settings = load_settings(
        kafka=broker.settings(topic_prefix=prefix, partitions=1, group_prefix=f"{prefix}g-"),
        s3={
            "endpoint_url": s3.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
        storage={"state_dir": str(tmp / "state")},
        # A long batch wait puts both bucket objects into one model call.
        classify={"classifiers": ["hashlist", MODEL], "max_wait_ms": 1000, "max_batch": 8},
        enforce={
            "on_flag_csam": "quarantine",
            "quarantine": f"s3://{bucket}-q/",
            "notify": {
                "channels": [
                    {"type": "webhook", "url": hook.url, "digest_interval_s": 0, "max_attempts": 1}
                ]
            },
        },
        api={
            "host": "127.0.0.1",
            "port": port,
            # The model's answer, not a timeout, must decide the upload however busy the
            # machine: a timeout adds an unverified-accept warning to the notifications.
            "deadline_s": 60,
            "force_deadline": True,
            "clients": [{"id": CLIENT, "cidrs": ["127.0.0.0/8"]}],
        },
    )
    await create_topics(settings.kafka)
    exporter = InMemorySpanExporter()
    tracing = setup_tracing("pictguard-test", exporter=exporter)
    assert tracing is not None
    try:
        async with open_runtime(settings, mode=Mode.DISTRIBUTED) as runtime:
            loops = await classify_loops(runtime) + await enforce_loops(runtime)
            app = await build_api(runtime)
            instrument_app(app)
            http_up = asyncio.Event()
            tasks = [asyncio.create_task(loop) for loop in loops]
            tasks.append(
                asyncio.create_task(serve_http(app, "127.0.0.1", port, runtime.stop, http_up))
            )
            try:
                await asyncio.wait_for(http_up.wait(), 30)

                def spans() -> Spans:
                    return Spans(exporter.get_finished_spans())

                # The bulk way: one new trace per object, as a backfill produces them.
                with tracer.start_as_current_span("test.backfill"):
                    records = []
                    for key in OBJECTS:
                        ref = ObjectRef(store=StoreKind.S3, bucket=bucket, key=key)
                        request = ScanRequest(lane=Lane.BULK, source=Source.BACKFILL, object=ref)
                        headers = new_trace_headers("ingest.enqueue", {"pictguard.object": ref.id})
                        records.append(
                            Outgoing(
                                settings.topic(SCAN_BULK),
                                encode(request),
                                request.key.encode(),
                                headers,
                            )
                        )
                await runtime.bus.produce_many(records)
                await until(lambda: len(spans().named("notify.deliver")) >= 2, what="bulk")
                # The sync way: pict-rs posts the raw bytes and waits for the answer.
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    await until_ready(http)
                    response = await http.post(
                        f"/api/v1/scan/{CLIENT}",
                        content=UPLOAD,
                        headers={"content-type": "image/png"},
                        timeout=120,
                    )
                # The refused upload: its report, and its bytes kept as evidence.
                await until(lambda: len(spans().named("notify.deliver")) >= 4, what="upload")
            finally:
                runtime.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        tracing.shutdown()
    from pipeline.metrics import metrics

    return Run(
        Spans(exporter.get_finished_spans()),
        prefix,
        bucket,
        response.status_code,
        [r.headers for r in hook.requests],
        metrics().expose()[0].decode(),
    )


async def until_ready(http: httpx.AsyncClient) -> None:
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("validate_api never became ready")


@pytest.fixture(scope="module")
def run(
    broker: Broker, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    previous = use_metrics(Metrics())
    try:
        with http_receiver() as hook:
            yield asyncio.run(scenario(broker, s3_server, tmp_path_factory.mktemp("traced"), hook))
    finally:
        use_metrics(previous)


def upload_trace(run: Run) -> int:
    [server] = [s for s in run.spans.all if s.kind is SpanKind.SERVER]
    return server.context.trace_id


def test_upload_is_one_trace_from_http_request_to_enforcement(run: Run) -> None:
    assert run.status == 406  # magenta: flagged, and pict-rs is told to refuse it
    spans, p = run.spans, run.prefix
    trace_id = upload_trace(run)
    server = next(s for s in spans.in_trace(trace_id) if s.kind is SpanKind.SERVER)
    assert server.name == "POST /api/v1/scan/{client_id}" and server.parent is None

    # Hop 1: validate_api → scan-requests.sync → classify.
    send_request = spans.one(f"send {p}scan-requests.sync", trace_id)
    classify = spans.one(f"process {p}scan-requests.sync", trace_id)
    assert send_request.kind is SpanKind.PRODUCER
    assert server.name in spans.ancestors(send_request)
    assert classify.kind is SpanKind.CONSUMER
    assert classify.parent is not None
    assert classify.parent.span_id == send_request.context.span_id
    assert classify.attributes is not None
    assert classify.attributes["messaging.system"] == "kafka"
    assert classify.attributes["pictguard.decision"] == "flag_csam"
    for step in ("classify.hash", "classify.decode", "classify.model", "classify.policy"):
        assert spans.parent(spans.under(step, classify)) == classify

    # Hop 2: classify → verdicts → enforce; and the reply to the waiting API replica.
    send_verdict = spans.one(f"send {p}verdicts", trace_id)
    assert send_verdict.kind is SpanKind.PRODUCER
    assert send_verdict.parent is not None
    assert send_verdict.parent.span_id == classify.context.span_id
    replies = [
        s
        for s in spans.in_trace(trace_id)
        if s.name.startswith(f"send {p}replies") and s.kind is SpanKind.PRODUCER
    ]
    assert [spans.parent(s) for s in replies] == [classify]
    enforce = spans.one(f"process {p}verdicts", trace_id)
    assert enforce.kind is SpanKind.CONSUMER
    assert enforce.parent is not None
    assert enforce.parent.span_id == send_verdict.context.span_id

    # The enforcement action and the admin notification close the same trace.
    verdict = spans.one("enforce.verdict", trace_id)
    assert spans.parent(verdict) == enforce
    assert verdict.attributes is not None
    assert verdict.attributes["pictguard.action"] == "report"  # inline upload: nothing stored
    send_action = spans.one(f"send {p}actions", trace_id)
    assert spans.parent(send_action) == verdict
    assert spans.ancestors(spans.one("notify.deliver", trace_id))[:2] == [
        "notify",
        "enforce.verdict",
    ]


def test_model_batch_links_every_member_request(run: Run) -> None:
    spans = run.spans
    members = spans.named("classify.model")
    batches = spans.named(f"model-{MODEL} batch")
    assert len(members) == 3  # two bucket objects and the upload
    linked = [link.context.span_id for batch in batches for link in batch.links]
    assert sorted(linked) == sorted(m.context.span_id for m in members)  # each exactly once
    assert all(batch.parent is None for batch in batches)  # a batch serves many traces
    shared = [batch for batch in batches if len(batch.links) == 2]
    assert shared, "the two bucket objects were not classified in one batch"
    assert len({link.context.trace_id for link in shared[0].links}) == 2
    for member in members:  # and each member points back at its batch
        [back] = member.links
        assert back.context.span_id in {b.context.span_id for b in batches}


def test_bucket_objects_trace_their_s3_calls(run: Run) -> None:
    spans, p = run.spans, run.prefix
    roots = spans.named("ingest.enqueue")
    assert len(roots) == 2
    backfill = spans.named("test.backfill")[0]
    for root in roots:
        assert root.parent is None  # one trace per object, linked to the listing
        assert [link.context.span_id for link in root.links] == [backfill.context.span_id]
        trace_id = root.context.trace_id
        get = spans.one("S3.GetObject", trace_id)
        assert spans.ancestors(get)[:2] == ["classify.fetch", f"process {p}scan-requests.bulk"]
        quarantine = spans.one("enforce.quarantine", trace_id)
        assert spans.ancestors(quarantine)[:2] == ["enforce.verdict", f"process {p}verdicts"]
        under = {s.name for s in spans.in_trace(trace_id) if quarantine.name in spans.ancestors(s)}
        assert {"S3.CopyObject", "S3.DeleteObject"} <= under
        assert all(
            s.kind is SpanKind.CLIENT for s in spans.in_trace(trace_id) if s.name.startswith("S3.")
        )


def test_no_image_bytes_or_trace_ids_leave_with_spans_or_notifications(run: Run) -> None:
    encoded = [base64.b64encode(data).decode()[:40] for data in [UPLOAD, *OBJECTS.values()]]
    for span in run.spans.all:
        for key, attr in (span.attributes or {}).items():
            assert not isinstance(attr, bytes), (span.name, key)
            text = str(attr)
            assert len(text) < 300, (span.name, key)
            assert not any(e in text for e in encoded), (span.name, key)
    # Webhook receivers are third parties: they get no trace context.
    assert len(run.hook) == 4
    assert not any("traceparent" in headers for headers in run.hook)


def test_consumer_lag_is_sampled_per_group_and_partition(run: Run) -> None:
    found = samples(run.metrics)
    p = run.prefix
    for group, topic in (
        ("classify-sync", "scan-requests.sync"),
        ("classify", "scan-requests.bulk"),
        ("enforce", "verdicts"),
    ):
        lag = value(
            found,
            "pictguard_consumer_lag",
            group=f"{p}g-{group}",
            topic=f"{p}{topic}",
            partition="0",
        )
        assert lag == 0  # everything was consumed before the consumers stopped
    assert value(found, "pictguard_model_batch_size_count", model=MODEL) >= 1
    assert value(found, "pictguard_model_batch_size_sum", model=MODEL) == 3
    assert value(found, "pictguard_enqueue_to_verdict_seconds_count", lane="sync") == 1
    # Two bucket objects moved, and the refused upload's bytes kept as evidence.
    assert value(found, "pictguard_actions_total", action="quarantine", outcome="done") == 3
