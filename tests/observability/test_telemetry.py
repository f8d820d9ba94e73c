"""Turning tracing on from the OTEL_* environment, and what it costs while off."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.bus.base import Message, Outgoing
from pipeline.bus.memory import MemoryBus
from pipeline.telemetry import (
    GRPC,
    HTTP,
    TelemetryError,
    TracingConfig,
    setup_tracing,
    tracing_config,
)
from pipeline.tracing import (
    consuming,
    inject_headers,
    producing,
    span,
    tracer,
    tracing_enabled,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),  # off by default
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, TracingConfig(("otlp",), HTTP)),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            TracingConfig(("otlp",), GRPC),
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, TracingConfig(("console",), HTTP)),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp,console",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            TracingConfig(("otlp", "console"), GRPC),
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_the_environment_decides(env: dict[str, str], expected: TracingConfig | None) -> None:
    assert tracing_config(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        },
    ],
)
def test_unsupported_settings_are_named(env: dict[str, str]) -> None:
    with pytest.raises(TelemetryError, match="OTEL_"):
        tracing_config(env)


def test_a_broken_setting_leaves_tracing_off_instead_of_stopping_the_role() -> None:
    assert setup_tracing("pictguard-test", environ={"OTEL_TRACES_EXPORTER": "zipkin"}) is None
    assert not tracing_enabled()


def test_off_by_default_the_helpers_create_nothing() -> None:
    assert setup_tracing("pictguard-test", environ={}) is None
    assert not tracing_enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    records = [Outgoing("t", b"v", b"k", {"traceparent": PARENT})]
    with producing(records, "kafka") as traced:
        assert traced is records  # not even a copy
    with span("classify.decode") as current:
        assert current is trace.INVALID_SPAN
    message = Message("t", b"v", headers={"traceparent": PARENT})
    with consuming(message, "kafka") as current:
        assert not current.is_recording()
        # What the stage produces still carries the incoming trace on.
        assert inject_headers()["traceparent"] == PARENT


async def test_the_in_process_bus_traces_like_kafka() -> None:
    exporter = InMemorySpanExporter()
    tracing = setup_tracing("pictguard-test", exporter=exporter)
    assert tracing is not None
    try:
        bus = MemoryBus()
        consumer = bus.consumer(["t"], "g")
        await consumer.start()
        with tracer.start_as_current_span("upload"):
            await bus.produce("t", b"v", b"k", inject_headers())
        await bus.produce("t", b"table write", b"k2")  # no trace context: no span
        first, second = await consumer.getmany(1000, 10)
        assert "traceparent" not in second.headers
        with consuming(first, bus.system):
            pass
    finally:
        tracing.shutdown()
    assert not tracing_enabled()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"upload", "send t", "process t"}
    send, process = spans["send t"], spans["process t"]
    assert send.kind is trace.SpanKind.PRODUCER and process.kind is trace.SpanKind.CONSUMER
    assert send.parent is not None and send.parent.span_id == spans["upload"].context.span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "in_process"
    assert process.attributes["messaging.destination.name"] == "t"
