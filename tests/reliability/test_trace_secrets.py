"""No secret leaves the process in a trace span or a metric label.

With tracing on, the FastAPI instrumentation recorded the request URL with its query, so a
span carried ``http.url: …/api/v1/scan/script-a?token=<the client's token>``; with header
capture configured (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``) it also
carried ``Authorization: Bearer <admin token>``. Every exporter is now wrapped in a
redacting one. Here `serve` runs in this process with every kind of secret configured and
every span going to an in-memory exporter; the spans are searched for each secret, as
``test_security.py`` searches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from pictguard.processes import run_serve
from pictguard.settings import load_settings
from pipeline import redact
from pipeline.metrics import Metrics, metrics, use_metrics
from pipeline.redact_spans import RedactingSpanExporter
from pipeline.samples import image_bytes
from pipeline.telemetry import setup_tracing
from tests.enforce.receivers import http_receiver
from tests.servers import S3Server, free_port

BAD = image_bytes(78, "PNG", 64)
SECRETS = {
    "client token a": "tokA-7d2e9c1b4f60aa",
    "client token b": "tokB-3c8a1f5e9d27bb",
    "admin token": "adm-5b9d3f7a1c84e2cc",
    "S3 secret key": "s3sk-9e1c3a5f7b20",
    "S3 session token": "s3st-2f4a6c8e0b13",
    "Kafka SASL password": "sasl-6b8d0f2a4c57",
    "webhook HMAC secret": "hmac-1e3c5a7f9b02dd",
    "webhook header": "hdr-8f0b2d4a6c93",
    "Slack webhook path": "slk-4a6c8e0f2b35",
    "MinIO webhook token": "mnt-0c2e4a6b8d19ee",
}
S = SECRETS
WRONG_TOKEN = "tokA-not-the-right-one-5e"  # a guess nobody configured


@dataclass
class Traced:
    spans: list[ReadableSpan]
    metrics_text: str
    statuses: dict[str, int]


def texts(span: ReadableSpan) -> Iterator[tuple[str, str]]:
    """Every string a span carries, with where it sits."""
    yield "name", span.name
    for key, value in (span.attributes or {}).items():
        yield f"attribute {key}", json.dumps(value, default=str)
    for event in span.events:
        for key, value in (event.attributes or {}).items():
            yield f"event {event.name} {key}", json.dumps(value, default=str)
    for link in span.links:
        for key, value in (link.attributes or {}).items():
            yield f"link {key}", json.dumps(value, default=str)
    if span.status.description:
        yield "status", span.status.description


async def exercise(settings: Any, port: int, sink: Any, bucket: str) -> dict[str, int]:
    started = asyncio.Event()
    serve = asyncio.create_task(run_serve(settings, started))
    statuses: dict[str, int] = {}
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({serve, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if serve.done():
            serve.result()
        admin = {"Authorization": f"Bearer {S['admin token']}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            png = {"Content-Type": "image/png"}
            body = image_bytes(5, "PNG", 32)
            for what, params in (
                ("own token in the query", {"token": S["client token a"]}),
                ("a wrong token in the query", {"token": WRONG_TOKEN}),
                ("another client's token", {"token": S["client token b"]}),
            ):
                answer = await http.post(
                    "/api/v1/scan/script-a", params=params, headers=png, content=body
                )
                statuses[what] = answer.status_code
            answer = await http.post(
                "/api/v1/check",
                params={"client_id": "script-b"},
                headers={**png, "Authorization": f"Bearer {S['client token b']}"},
                content=body,
            )
            statuses["bearer"] = answer.status_code
            statuses["admin status"] = (
                await http.get("/admin/enforce/status", headers=admin)
            ).status_code
            # Blocking a stored image: S3 reads signed with the session token, a quarantine,
            # and notifications to the webhook and Slack sinks.
            blocked = await http.post(
                "/admin/block",
                json={"target": f"s3://{bucket}/media/bad.png", "reason": "test"},
                headers=admin,
            )
            statuses["block"] = blocked.status_code
            flagged = await http.post(
                "/api/v1/scan/pictrs", params={"token": S["client token a"]}, content=BAD
            )
            statuses["flagged upload"] = flagged.status_code
        # A bucket notification with the MinIO token: ingest → classify → enforce.
        hook = settings.ingest.webhook
        event = {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{bucket}/media/cat.png",
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": "minio:s3",
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": "media%2Fcat.png", "size": 10, "eTag": "x"},
                    },
                }
            ],
        }
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"http://{hook.host}:{hook.port}/hooks/minio",
                json=event,
                headers={"Authorization": f"Bearer {S['MinIO webhook token']}"},
            )
            statuses["bucket notification"] = answer.status_code
            for _ in range(300):
                if len(sink.requests) >= 2:
                    break
                await asyncio.sleep(0.1)
            statuses["notifications"] = len(sink.requests)
    finally:
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve
    return statuses


@pytest.fixture(scope="module")
def traced(
    s3_server: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Traced]:
    tmp: Path = tmp_path_factory.mktemp("traced-secrets")
    port = free_port()
    bucket = f"trace-{uuid.uuid4().hex[:12]}"
    client: Any = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="media/bad.png", Body=BAD)
    client.put_object(Bucket=bucket, Key="media/cat.png", Body=image_bytes(77, "PNG", 64))
    previous = use_metrics(Metrics())
    saved_env = os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST")
    # An admin who turned header capture on must not export the Authorization header.
    os.environ["OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"] = ".*"
    exporter = InMemorySpanExporter()
    tracing = setup_tracing("pictguard-test", exporter=exporter)
    assert tracing is not None
    try:
        with http_receiver() as sink:
            settings = load_settings(
                kafka={"sasl_password": S["Kafka SASL password"]},
                s3={
                    "endpoint_url": s3_server.endpoint,
                    "access_key_id": "testing",
                    "secret_access_key": S["S3 secret key"],
                    "session_token": S["S3 session token"],
                },
                storage={"state_dir": str(tmp / "state"), "allowed_locations": [f"s3://{bucket}"]},
                classify={"classifiers": ["hashlist"]},
                api={
                    "host": "127.0.0.1",
                    "port": port,
                    "deadline_s": 3,
                    "clients": [
                        {"id": "pictrs", "cidrs": ["127.0.0.0/8"], "token": S["client token a"]},
                        {"id": "script-a", "token": S["client token a"]},
                        {"id": "script-b", "token": S["client token b"]},
                    ],
                },
                ingest={
                    "webhook": {
                        "enabled": True,
                        "host": "127.0.0.1",
                        "port": free_port(),
                        "minio_token": S["MinIO webhook token"],
                    }
                },
                enforce={
                    "admin_token": S["admin token"],
                    "notify": {
                        "channels": [
                            {
                                "type": "webhook",
                                "url": f"{sink.url}/hook?token={S['webhook header']}",
                                "secret": S["webhook HMAC secret"],
                                "headers": {"Authorization": f"Bearer {S['webhook header']}"},
                                "min_severity": "info",
                                "digest_interval_s": 0,
                                "max_attempts": 1,
                            },
                            {
                                "type": "slack",
                                "url": f"{sink.url}/services/T0/B0/{S['Slack webhook path']}",
                                "min_severity": "info",
                                "digest_interval_s": 0,
                                "max_attempts": 1,
                            },
                        ]
                    },
                },
            )
            statuses = asyncio.run(exercise(settings, port, sink, bucket))
        text = metrics().expose()[0].decode()
        yield Traced(list(exporter.get_finished_spans()), text, statuses)
    finally:
        tracing.shutdown()
        use_metrics(previous)
        if saved_env is None:
            os.environ.pop("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", None)
        else:
            os.environ["OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"] = saved_env


def test_the_scenario_ran(traced: Traced) -> None:
    assert traced.statuses["own token in the query"] == 200
    assert traced.statuses["a wrong token in the query"] == 401
    assert traced.statuses["another client's token"] == 401
    assert traced.statuses["bearer"] == 200
    assert traced.statuses["admin status"] == 200
    assert traced.statuses["block"] == 200
    assert traced.statuses["flagged upload"] == 406
    assert traced.statuses["bucket notification"] == 200
    assert traced.statuses["notifications"] >= 2
    servers = [s for s in traced.spans if s.kind is SpanKind.SERVER]
    assert len(servers) >= 6  # every request above has its span
    assert any(s.name.startswith("notify.") for s in traced.spans)


def test_no_secret_in_any_span(traced: Traced) -> None:
    leaked = {
        (name, where)
        for span in traced.spans
        for where, text in texts(span)
        for name, secret in {**SECRETS, "wrong token": WRONG_TOKEN}.items()
        if secret in text
    }
    assert leaked == set(), f"secrets in spans: {sorted(leaked)}"


def test_urls_keep_their_shape_with_the_token_redacted(traced: Traced) -> None:
    """The redaction replaces the value, so the span still says a token was given."""
    urls = [
        str(value)
        for span in traced.spans
        if span.kind is SpanKind.SERVER
        for key, value in (span.attributes or {}).items()
        if key in ("http.url", "url.full", "http.target", "url.query")
    ]
    with_token = [u for u in urls if "token=" in u]
    assert with_token, urls
    assert all("token=[redacted]" in u for u in with_token), with_token
    headers = [
        (span.attributes or {}).get("http.request.header.authorization")
        for span in traced.spans
        if span.kind is SpanKind.SERVER
    ]
    assert ("[redacted]",) in headers or "[redacted]" in headers, headers


def test_no_secret_in_a_metric_label(traced: Traced) -> None:
    assert "pictguard_" in traced.metrics_text
    leaked = {name for name, secret in SECRETS.items() if secret in traced.metrics_text}
    assert leaked == set(), f"secrets in metrics: {sorted(leaked)}"


def test_every_part_of_a_span_is_redacted() -> None:
    """Exceptions, links and statuses too, not only attributes (a unit check)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    secret = "hook-secret-0123456789"
    redact.register([secret])
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    span = ReadableSpan(
        name=f"POST /x/{secret}",
        context=context,
        attributes={
            "http.url": "https://h/p?a=1&token=unconfigured-guess&sig=abc",
            "http.request.header.cookie": ("session=abc",),
            "peer": f"https://user:{secret}@host/",
            "list": ("ok", f"x{secret}x"),
            "count": 3,
        },
        events=[Event("exception", {"exception.message": f"refused https://h/{secret}"})],
        links=[Link(context, {"why": secret})],
        status=Status(StatusCode.ERROR, f"failed with {secret}"),
    )
    exported = InMemorySpanExporter()
    RedactingSpanExporter(exported, redact.configured).export([span])
    [out] = exported.get_finished_spans()
    everything = " ".join(text for _, text in texts(out))
    assert secret not in everything and "unconfigured-guess" not in everything
    assert out.attributes is not None
    assert out.attributes["http.url"] == "https://h/p?a=1&token=[redacted]&sig=[redacted]"
    assert out.attributes["http.request.header.cookie"] == "[redacted]"
    assert out.attributes["count"] == 3
    assert out.context == context and out.status.status_code is StatusCode.ERROR


def test_a_fresh_uuid_is_not_redacted() -> None:
    """Redaction leaves ordinary values alone (ids, keys, digests)."""
    ordinary = f"s3://media/{uuid.uuid4().hex}.png?versionId=3&x=token"
    assert redact.configured(ordinary) == ordinary
