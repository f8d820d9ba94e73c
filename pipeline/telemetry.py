"""Turning tracing on: the OpenTelemetry SDK, its exporter, and library instrumentation.

Configured from the standard ``OTEL_*`` environment, so the admin's collector settings
(endpoint, headers, certificates, sampler, batch sizes) work as documented upstream:

- off unless ``OTEL_TRACES_EXPORTER`` names an exporter or ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; ``OTEL_SDK_DISABLED=true`` wins;
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default once an endpoint is set), ``console``, ``none``;
- ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``: ``http/protobuf`` (default) or ``grpc``;
- ``OTEL_SERVICE_NAME`` overrides the role's default name (``pictguard-<role>``).

While off nothing of the SDK is imported or created, and the S3 client is not wrapped.
Every exporter is wrapped so that spans leave with the configured secrets and any
credential in a URL redacted (:mod:`pipeline.redact_spans`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from pipeline import redact, tracing
from pipeline.errors import PictguardError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

GRPC = "grpc"
HTTP = "http/protobuf"
_PROTOCOLS = (GRPC, HTTP)
_EXPORTERS = ("otlp", "console")
# Probes and scrapes are not worth a trace each.
EXCLUDED_URLS = "/healthz,/readyz,/metrics"


class TelemetryError(PictguardError, ValueError):
    """The ``OTEL_*`` environment asks for something this installation cannot do."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What the environment asks for: which exporters, and the OTLP protocol."""

    exporters: tuple[str, ...]
    protocol: str = HTTP


def tracing_config(environ: Mapping[str, str] | None = None) -> TracingConfig | None:
    """Read the ``OTEL_*`` variables; None when tracing stays off.

    Raises :class:`TelemetryError` for an exporter or protocol pictguard does not ship.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    names = [n for n in names if n != "none"]
    if not names:
        return None
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise TelemetryError(
            f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported; use otlp, console or none"
        )
    protocol = (
        (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or HTTP
        )
        .strip()
        .lower()
    )
    if protocol not in _PROTOCOLS:
        raise TelemetryError(
            f"OTLP protocol {protocol!r} is not supported (OTEL_EXPORTER_OTLP_PROTOCOL): "
            "use grpc or http/protobuf"
        )
    return TracingConfig(tuple(dict.fromkeys(names)), protocol)


@dataclass
class Tracing:
    """An installed tracing setup; :meth:`shutdown` flushes what is still buffered."""

    provider: TracerProvider
    config: TracingConfig | None
    _previous: trace.TracerProvider | None = None

    def shutdown(self) -> None:
        """Export pending spans, undo the instrumentation, stop the provider."""
        uninstrument_libraries()
        tracing.use_provider(self._previous)
        self.provider.shutdown()


def _version() -> str:
    try:
        return metadata.version("pictguard")
    except metadata.PackageNotFoundError:
        return "unknown"


def _resource(service_name: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, str] = {"service.version": _version(), "service.namespace": "pictguard"}
    # Attributes given here win over the environment's; the admin's name must win over ours.
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = service_name
    return Resource.create(attributes)


def _exporter(name: str, protocol: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        if protocol == GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
    except ImportError as exc:
        raise TelemetryError(
            f"OTLP export over {protocol} needs opentelemetry-exporter-otlp: install "
            "pictguard[otlp] (the container image has it)"
        ) from exc
    # Endpoint, headers, certificates, compression and timeout come from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()  # type: ignore[no-any-return]


def setup_tracing(
    service_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing | None:
    """Install an SDK tracer provider if the environment (or ``exporter``) asks for one.

    ``exporter`` (tests) sends every span, unsampled and unbatched, to that exporter and
    leaves the process-wide provider alone. Otherwise the provider comes from the ``OTEL_*``
    environment and is also made the global one, for libraries that use it. Returns None
    when tracing stays off, or when a provider is already installed (tracing set up by a
    caller, or by ``opentelemetry-instrument``).

    A broken ``OTEL_*`` setting is logged and leaves tracing off: scanning must go on.
    """
    env = os.environ if environ is None else environ
    if exporter is None and tracing.tracing_enabled():
        return None
    try:
        config = None if exporter is not None else tracing_config(env)
        if exporter is None and config is None:
            return None
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        from pipeline.redact_spans import RedactingSpanExporter

        if exporter is not None:
            provider = TracerProvider(resource=_resource(service_name, env), sampler=ALWAYS_ON)
            provider.add_span_processor(
                SimpleSpanProcessor(RedactingSpanExporter(exporter, redact.configured))
            )
        else:
            assert config is not None
            # Sampler from OTEL_TRACES_SAMPLER(_ARG); batching from OTEL_BSP_*.
            provider = TracerProvider(resource=_resource(service_name, env))
            for name in config.exporters:
                inner = _exporter(name, config.protocol)
                provider.add_span_processor(
                    BatchSpanProcessor(RedactingSpanExporter(inner, redact.configured))
                )
    except TelemetryError as exc:
        log.error("tracing stays off: %s", exc)
        return None
    if exporter is None:
        trace.set_tracer_provider(provider)
    previous = tracing.use_provider(provider)
    instrument_libraries()
    if config is not None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "the default endpoint"
        )
        log.info(
            "tracing on: %s",
            ", ".join(
                f"OTLP {config.protocol} to {endpoint}" if n == "otlp" else n
                for n in config.exporters
            ),
        )
    return Tracing(provider, config, previous)


@contextlib.contextmanager
def tracing_session(service_name: str) -> Iterator[Tracing | None]:
    """:func:`setup_tracing` for the life of a process's main block; flushes at the end."""
    installed = setup_tracing(service_name)
    try:
        yield installed
    finally:
        if installed is not None:
            installed.shutdown()


_instrumented: list[Any] = []


def instrument_libraries() -> None:
    """Trace S3 calls (aiobotocore) with the official instrumentation; idempotent.

    Kafka gets pictguard's own spans (:func:`pipeline.tracing.producing`/``consuming``),
    which work the same on the in-process bus; the aiokafka instrumentation would add a
    second ``traceparent`` header to every record and a root span to every poll.
    """
    if _instrumented:
        return
    try:
        from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor
    except ImportError:
        log.info("S3 calls are not traced: opentelemetry-instrumentation-botocore is missing")
        return
    instrumentor = AiobotocoreInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # The S3 spans follow pipeline.tracing's provider, including a test's.
        instrumentor.instrument(tracer_provider=tracing.provider)
        _instrumented.append(instrumentor)


def uninstrument_libraries() -> None:
    """Undo :func:`instrument_libraries` (tests; the end of a process)."""
    while _instrumented:
        _instrumented.pop().uninstrument()


def instrument_app(app: Any) -> None:
    """Trace a FastAPI app's requests (one SERVER span per request) when tracing is on.

    Call it from the app factory after :func:`setup_tracing`; without tracing it adds
    nothing, so requests pay no middleware. Probes and ``/metrics`` are not traced.
    """
    if not tracing.tracing_enabled():
        return
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        log.info("HTTP requests are not traced: opentelemetry-instrumentation-fastapi is missing")
        return
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider,
        excluded_urls=EXCLUDED_URLS,
        # The per-message ASGI receive/send spans say nothing an admin needs.
        exclude_spans=["receive", "send"],
    )
