"""W3C trace context carried in message headers across every bus hop, and pictguard's spans.

Producers call :func:`inject_headers` inside their current span; the bus wraps every record
that carries a ``traceparent`` in a PRODUCER span (:func:`producing`) and consumers handle
each message inside a CONSUMER span that continues it (:func:`consuming`). So one upload is
one trace: HTTP request → send → classify → send → enforce.

Off by default at no cost: until :mod:`pipeline.telemetry` installs an SDK provider,
:func:`tracing_enabled` is False and the helpers here create no span objects at all — they
only pass the incoming ``traceparent`` through, so a role without tracing between two roles
with tracing does not break the trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from pipeline.bus.base import Message, Outgoing

TRACEPARENT = "traceparent"
INSTRUMENTATION = "pictguard"
# An empty context: a span started with it is the root of a new trace.
ROOT = Context()

_override: trace.TracerProvider | None = None


def use_provider(provider: trace.TracerProvider | None) -> trace.TracerProvider | None:
    """Make pictguard's spans go to ``provider`` (None: back to the global one).

    :mod:`pipeline.telemetry` calls this; tests use it to capture spans without touching
    the process-wide provider, which OpenTelemetry lets a process set only once.
    Returns the provider it replaces.
    """
    global _override
    previous, _override = _override, provider
    return previous


def tracing_enabled() -> bool:
    """Whether an SDK provider records spans (False by default: every span is a no-op)."""
    return _override is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


class _Tracer(trace.Tracer):
    """A tracer that follows :func:`use_provider`, else the global provider."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._global = trace.get_tracer(name)
        self._provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer = self._global

    def _current(self) -> trace.Tracer:
        provider = _override
        if provider is None:
            return self._global
        if provider is not self._provider:
            self._provider, self._tracer = provider, provider.get_tracer(self._name)
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:  # type: ignore[override]
        return self._current().start_span(*args, **kwargs)

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        with self._current().start_as_current_span(*args, **kwargs) as span:
            yield span


class _Provider(trace.TracerProvider):
    """Hands out :class:`_Tracer` objects; given to library instrumentations (S3, FastAPI)."""

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Tracer(instrumenting_module_name)


tracer: trace.Tracer = _Tracer(INSTRUMENTATION)
provider: trace.TracerProvider = _Provider()


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context (``traceparent``/``tracestate``)."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str]) -> Context:
    """The trace context a producer put in ``headers`` (empty context if none)."""
    return propagate.extract(dict(headers))


@contextmanager
def continued(headers: Mapping[str, str]) -> Iterator[None]:
    """Run the block inside the trace context carried by ``headers``."""
    token = otel_context.attach(extract_context(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link] | None = None,
    context: Context | None = None,
) -> Iterator[trace.Span]:
    """A span around the block, or nothing at all while tracing is off (the hot-path form)."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes, links=links
    ) as current:
        yield current


def _message_key(key: bytes | None) -> str | None:
    return key.decode(errors="replace") if key else None


@contextmanager
def consuming(
    message: Message, system: str, attributes: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """Handle ``message`` inside a CONSUMER span that continues the producer's trace.

    ``system`` is the bus's (``Bus.system``); ``attributes`` add to the messaging ones.
    With tracing off the producer's context is still made current, so anything the block
    produces carries the same ``traceparent`` on.
    """
    if not tracing_enabled():
        with continued(message.headers):
            yield trace.get_current_span()
        return
    attrs: dict[str, Any] = {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": message.topic,
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.offset": message.offset,
        "messaging.message.body.size": len(message.value),
    }
    key = _message_key(message.key)
    if key is not None:
        attrs["messaging.kafka.message.key"] = key
    attrs.update(attributes or {})
    with tracer.start_as_current_span(
        f"process {message.topic}",
        context=extract_context(message.headers),
        kind=SpanKind.CONSUMER,
        attributes=attrs,
    ) as current:
        yield current


@contextmanager
def producing(records: Sequence[Outgoing], system: str) -> Iterator[Sequence[Outgoing]]:
    """Wrap each record that carries a trace context in a PRODUCER span until the block ends.

    Buses call it around sending and awaiting the acknowledgement. Each such record's
    ``traceparent`` is replaced by its PRODUCER span's, so the consumer's span becomes a
    child of the send. Records without a trace context (table writes) get no span. With
    tracing off, ``records`` come back untouched.
    """
    if not tracing_enabled():
        yield records
        return
    spans: list[trace.Span] = []
    out: list[Outgoing] = []
    for record in records:
        if TRACEPARENT not in record.headers:
            out.append(record)
            continue
        parent = extract_context(record.headers)
        attrs: dict[str, Any] = {
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": record.topic,
            "messaging.message.body.size": len(record.value or b""),
        }
        key = _message_key(record.key)
        if key is not None:
            attrs["messaging.kafka.message.key"] = key
        send = tracer.start_span(
            f"send {record.topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attrs
        )
        headers = dict(record.headers)
        propagate.inject(headers, context=trace.set_span_in_context(send, parent))
        out.append(dataclasses.replace(record, headers=headers))
        spans.append(send)
    try:
        yield out
    except BaseException as exc:
        for send in spans:
            send.record_exception(exc)
            send.set_status(Status(StatusCode.ERROR, f"{exc.__class__.__name__}: {exc}"))
        raise
    finally:
        for send in spans:
            send.end()


def current_span_context() -> SpanContext | None:
    """The current span's context, for a later link (None while tracing is off)."""
    if not tracing_enabled():
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def link_current(to: SpanContext | None) -> None:
    """Add a link from the current span to ``to`` (a batch the current item went through)."""
    if to is not None:
        trace.get_current_span().add_link(to)


def new_trace_headers(name: str, attributes: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Headers that start a new trace for one item of a long job (a backfill listing).

    The item's trace gets a short root span linked to the job's current span, so a bucket
    of a million objects makes a million small traces, not one trace of a million spans.
    """
    if not tracing_enabled():
        return {}
    job = current_span_context()
    links = [Link(job)] if job is not None else None
    with tracer.start_as_current_span(name, context=ROOT, attributes=attributes, links=links):
        return inject_headers()
