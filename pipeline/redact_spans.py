"""Redacting spans on their way to the exporter (imported only once tracing is on).

A span's attributes come from pictguard and from libraries: the FastAPI instrumentation
records the request URL with its query (``/api/v1/scan/lemmy?token=…``), an exception
event records a message that may quote a webhook URL. Every exporter pictguard installs
is wrapped in :class:`RedactingSpanExporter`, so whatever the source, a span leaves the
process with its secrets replaced by ``[redacted]`` (see :mod:`pipeline.redact`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from pipeline.redact import REDACTED, sensitive_name

Redact = Callable[[str], str]


def _value(value: Any, redact: Redact) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return tuple(redact(v) if isinstance(v, str) else v for v in value)
    return value


def _attributes(attributes: Mapping[str, Any] | None, redact: Redact) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if sensitive_name(key) and isinstance(value, (str, list, tuple)):
            out[key] = REDACTED  # e.g. a captured Authorization header: the whole value
        else:
            out[key] = _value(value, redact)
    return out


def redact_span(span: ReadableSpan, redact: Redact) -> ReadableSpan:
    """A copy of ``span`` with ``redact`` applied to its name, attributes, events' and
    links' attributes and status description."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=redact(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_attributes(span.attributes, redact),
        events=[Event(e.name, _attributes(e.attributes, redact), e.timestamp) for e in span.events],
        links=[Link(link.context, _attributes(link.attributes, redact)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Hands ``inner`` redacted copies of the spans (runs in the export thread)."""

    def __init__(self, inner: SpanExporter, redact: Redact) -> None:
        self.inner = inner
        self.redact = redact

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([redact_span(s, self.redact) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
