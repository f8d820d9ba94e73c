"""W3C trace context carried in message headers across every bus hop.

With no OpenTelemetry SDK configured the API is a no-op, so this costs nothing by default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

tracer = trace.get_tracer("pictguard")


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
