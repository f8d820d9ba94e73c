"""Prometheus metrics of every role, in one registry.

Every series pictguard exports is defined in :class:`Metrics`; stages call the ``record_*``
functions below, never prometheus_client directly. Nothing happens at import: the registry
is created on first use, in a registry of its own (not prometheus_client's global one), and
no server starts until a role calls :func:`pipeline.health.start_metrics_server`.

Roles without an HTTP API (ingest, classify, enforce) serve ``/metrics``, ``/healthz`` and
``/readyz`` on ``metrics.host:metrics.port`` (unset: each role's own default port, so roles
can share a host); validate_api serves ``/metrics`` on its own port with
:func:`metrics_endpoint`. A role whose endpoint cannot listen does not start: probes and
alerts would otherwise watch nothing.
"""

from __future__ import annotations

import contextlib
import logging
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    Lane,
    UnverifiedReason,
    Verdict,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


log = logging.getLogger(__name__)

# Sync uploads are answered in well under a second; a bulk backfill may queue for hours.
LATENCY_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0),
)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNVERIFIED_REASONS = typing.get_args(UnverifiedReason)
SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class SyncOutcome(StrEnum):
    """How validate_api answered one synchronous validation."""

    CACHE_HIT = "cache_hit"  # from hash lists or the verdict cache, without the bus
    ANSWERED = "answered"  # classify's verdict arrived before the deadline
    TIMED_OUT = "timed_out"  # the deadline passed; answered by the timeout setting
    FAILED = "failed"  # could not be asked (bus down)
    SKIPPED = "skipped"  # not scanned by configuration (video uploads)
    OVERLOADED = "overloaded"  # above api.max_inflight; answered by api.on_overload


class Metrics:
    """Every pictguard series. One instance per process (see :func:`metrics`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Info("pictguard_build", "pictguard version", registry=r)
        try:
            version = metadata.version("pictguard")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self.build_info.info({"version": version})

        self.consumer_lag = Gauge(
            "pictguard_consumer_lag",
            "Messages behind the end of the partition, per consumer group (sampled)",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.scan_requests = Counter(
            "pictguard_scan_requests",
            "Scan requests produced (acknowledged by the bus)",
            ["source", "lane"],
            registry=r,
        )
        self.ingest_objects = Counter(
            "pictguard_ingest_objects",
            "Objects named by notifications, by source and what became of them",
            ["source", "outcome"],
            registry=r,
        )
        self.ingest_dead_letters = Counter(
            "pictguard_ingest_dead_letters",
            "Payloads that could not be (fully) understood, by source and reason",
            ["source", "reason"],
            registry=r,
        )
        self.enqueue_to_verdict = Histogram(
            "pictguard_enqueue_to_verdict_seconds",
            "From a scan request's creation to its verdict being acknowledged by the bus",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "pictguard_images_scanned",
            "Images classify finished, by lane and by what decided (model, cache, hashlist, "
            "error, none); rate() gives images per second",
            ["lane", "path"],
            registry=r,
        )
        self.verdicts = Counter(
            "pictguard_verdicts",
            "Verdicts produced, by decision, lane and what decided (model, cache, hashlist, "
            "error, none); the upload fast path's verdicts count in lane sync",
            ["decision", "lane", "path"],
            registry=r,
        )
        self.model_batch_size = Histogram(
            "pictguard_model_batch_size",
            "Items per model call of a dynamic batcher",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.model_batch_seconds = Histogram(
            "pictguard_model_batch_seconds",
            "Duration of one batched model call",
            ["model"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.model_batch_failures = Counter(
            "pictguard_model_batch_failures",
            "Batched model calls that raised (their items were retried one by one)",
            ["model"],
            registry=r,
        )
        self.actions = Counter(
            "pictguard_actions",
            "Enforcement actions, by type and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "pictguard_errors",
            "Things that went wrong, by stage and reason (error verdicts, dead letters, "
            "failed actions, lost notifications)",
            ["stage", "reason"],
            registry=r,
        )
        self.guard_tripped = Gauge(
            "pictguard_guard_tripped",
            "1 while the blast-radius guard holds deletes and quarantines, else 0",
            registry=r,
        )
        self.guard_trips = Counter(
            "pictguard_guard_trips", "Times the blast-radius guard tripped", registry=r
        )
        self.notifications = Counter(
            "pictguard_notifications",
            "Notification deliveries, by channel and result (sent, failed)",
            ["channel", "result"],
            registry=r,
        )
        self.sync_validations = Counter(
            "pictguard_sync_validations",
            "Synchronous validations (pict-rs uploads) by how they were answered",
            ["outcome"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "pictguard_sync_validation_seconds",
            "Time validate_api took to answer a synchronous validation",
            ["outcome"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.unverified_accepts = Counter(
            "pictguard_unverified_accepts",
            "Uploads answered 2xx without a real verdict, by reason (timeout, unavailable, "
            "overload, error, video): kept by pict-rs and not looked at until storage is "
            "scanned",
            ["reason"],
            registry=r,
        )
        self.api_inflight = Gauge(
            "pictguard_api_inflight",
            "Uploads this API replica is validating now (api.max_inflight caps it)",
            registry=r,
        )
        self.classifier_down = Gauge(
            "pictguard_api_classifier_down",
            "1 while the last api.degraded_after uploads that needed classify got no verdict "
            "(timeout, broker or classify unreachable), else 0",
            registry=r,
        )
        self.remote_leases = Counter(
            "pictguard_remote_leases",
            "Scan requests leased to remote workers, by worker id and lane",
            ["worker", "lane"],
            registry=r,
        )
        self.remote_results = Counter(
            "pictguard_remote_results",
            "Results remote workers sent, by worker id and outcome (accepted; refused as "
            "expired, not_leased or mismatch)",
            ["worker", "outcome"],
            registry=r,
        )
        self.remote_expired = Counter(
            "pictguard_remote_lease_expiries",
            "Leases that ran out unanswered (the request went back to the queue)",
            ["worker"],
            registry=r,
        )
        self.remote_lease_seconds = Histogram(
            "pictguard_remote_lease_seconds",
            "From a lease to its accepted result, per worker",
            ["worker"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.remote_refused = Counter(
            "pictguard_remote_refused_calls",
            "Worker API calls refused, by reason (bad_token, revoked, rate_limited, "
            "wrong_protocol, too_large)",
            ["reason"],
            registry=r,
        )
        self.remote_connected = Gauge(
            "pictguard_remote_worker_connected",
            "1 while the remote worker was heard from within classify.remote.stale_s, else 0",
            ["worker"],
            registry=r,
        )
        self.remote_leased_now = Gauge(
            "pictguard_remote_worker_leases",
            "Leases a remote worker holds now",
            ["worker"],
            registry=r,
        )
        self.remote_queued = Gauge(
            "pictguard_remote_queued",
            "Scan requests waiting for a remote worker, by lane",
            ["lane"],
            registry=r,
        )
        self.remote_client_results = Counter(
            "pictguard_remote_client_results",
            "Results this remote worker sent, by how the server took them (accepted, "
            "refused, lost: the server could not be reached before the lease ran out)",
            ["outcome"],
            registry=r,
        )
        # Known label values start at 0, so rate() and alerts see a series from the start.
        for outcome in SyncOutcome:
            self.sync_validations.labels(outcome.value)
        for reason in UNVERIFIED_REASONS:
            self.unverified_accepts.labels(reason)
        for decision in Decision:
            for lane in Lane:
                for path in VERDICT_PATHS:
                    self.verdicts.labels(decision.value, lane.value, path)
        for action in ActionType:
            for result in ActionOutcome:
                self.actions.labels(action.value, result.value)
        self.guard_tripped.set(0)
        self._lag_keys: dict[str, set[tuple[str, str]]] = {}

    def set_lag(self, group: str, lags: Mapping[tuple[str, int], int]) -> None:
        """Set ``group``'s lag per (topic, partition); drop partitions it no longer has."""
        keys = {(topic, str(partition)) for topic, partition in lags}
        for topic, part in self._lag_keys.get(group, set()) - keys:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(group, topic, part)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(group, topic, str(partition)).set(lag)
        self._lag_keys[group] = keys

    def expose(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type for an ``Accept`` header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


_current: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics (created on first use)."""
    global _current
    if _current is None:
        _current = Metrics()
    return _current


def use_metrics(instance: Metrics | None) -> Metrics | None:
    """Replace this process's metrics (tests start from zero); returns the old instance."""
    global _current
    previous, _current = _current, instance
    return previous


# -- what the stages call ------------------------------------------------------------------


def record_scan_requests(source: str, lane: str, count: int = 1) -> None:
    """``count`` scan requests from ``source`` were acknowledged by the bus."""
    if count:
        metrics().scan_requests.labels(source, lane).inc(count)


def record_ingest(source: str, outcome: str, count: int = 1) -> None:
    """``count`` objects named by ``source``'s notifications ended as ``outcome``."""
    if count:
        metrics().ingest_objects.labels(source, outcome).inc(count)


def record_ingest_dead_letter(source: str, reason: str) -> None:
    """A notification payload from ``source`` was dead-lettered."""
    metrics().ingest_dead_letters.labels(source, reason).inc()
    record_error("ingest", reason)


# What decided a verdict: the ``path`` label of verdicts and scanned images.
VERDICT_PATHS = ("model", "cache", "hashlist", "error", "none")


def _path(verdict: Verdict) -> str:
    if verdict.decision is Decision.ERROR:
        return "error"
    if verdict.cached:
        return "cache"
    if verdict.matched:
        return "hashlist"
    if any(key.startswith("model:") for key in verdict.timings_ms):
        return "model"
    return "none"


def record_verdict(verdict: Verdict, enqueued_at: datetime, now: datetime) -> None:
    """One verdict was acknowledged by the bus at ``now`` for a request made at ``enqueued_at``."""
    m = metrics()
    lane = verdict.lane.value
    path = _path(verdict)
    m.verdicts.labels(verdict.decision.value, lane, path).inc()
    m.images.labels(lane, path).inc()
    # Clocks of different hosts may disagree by a little; never observe a negative time.
    m.enqueue_to_verdict.labels(lane).observe(max(0.0, (now - enqueued_at).total_seconds()))
    if verdict.decision is Decision.ERROR:
        reason = verdict.reason.value if verdict.reason else "unknown"
        m.errors.labels("classify", reason).inc()


def record_fast_verdict(verdict: Verdict) -> None:
    """validate_api answered an upload from the hash lists or the verdict cache and the bus
    acknowledged the verdict it published for enforce (counted as the decision it is)."""
    m = metrics()
    m.verdicts.labels(verdict.decision.value, verdict.lane.value, _path(verdict)).inc()
    if verdict.decision is Decision.ERROR:
        m.errors.labels("api", verdict.reason.value if verdict.reason else "unknown").inc()


def record_model_batch(model: str, size: int, seconds: float, *, failed: bool = False) -> None:
    """One call of a dynamic batcher's model function."""
    m = metrics()
    model = model.removeprefix("model-")  # batchers are named model-<classifier>
    m.model_batch_size.labels(model).observe(size)
    m.model_batch_seconds.labels(model).observe(seconds)
    if failed:
        m.model_batch_failures.labels(model).inc()


def record_action(action: EnforcementAction) -> None:
    """One enforcement action was recorded (published to ``actions``)."""
    m = metrics()
    m.actions.labels(action.action.value, action.outcome.value).inc()
    if action.outcome is ActionOutcome.FAILED:
        m.errors.labels("enforce", f"{action.action.value}_failed").inc()


def record_error(stage: str, reason: str) -> None:
    """Something ``stage`` could not do, for a reason with few distinct values."""
    metrics().errors.labels(stage, reason).inc()


def watch_guard(tripped: Callable[[], bool]) -> None:
    """Read the guard gauge from ``tripped`` at every scrape (always the current state)."""
    metrics().guard_tripped.set_function(lambda: 1.0 if tripped() else 0.0)


def record_guard_trip() -> None:
    """The blast-radius guard tripped."""
    metrics().guard_trips.inc()


def record_notification(channel: str, *, sent: bool) -> None:
    """One notification delivery to ``channel`` ended (after its retries)."""
    metrics().notifications.labels(channel, "sent" if sent else "failed").inc()
    if not sent:
        record_error("notify", "delivery_failed")


def record_sync_outcome(outcome: SyncOutcome | str, seconds: float | None = None) -> None:
    """validate_api answered one synchronous validation (``seconds``: request to answer)."""
    value = SyncOutcome(outcome).value
    m = metrics()
    m.sync_validations.labels(value).inc()
    if seconds is not None:
        m.sync_seconds.labels(value).observe(max(0.0, seconds))


def record_unverified_accept(reason: str) -> None:
    """validate_api answered one upload 2xx without a real verdict, for ``reason``."""
    metrics().unverified_accepts.labels(reason).inc()


def watch_api(inflight: Callable[[], int], classifier_down: Callable[[], bool]) -> None:
    """Read the API's uploads in flight and its classifier-path state at every scrape."""
    m = metrics()
    m.api_inflight.set_function(_as_float(inflight))
    m.classifier_down.set_function(_as_float(classifier_down))


def record_remote_lease(worker: str, lane: str, count: int = 1) -> None:
    """``count`` scan requests were leased to remote worker ``worker``."""
    if count:
        metrics().remote_leases.labels(worker, lane).inc(count)


def record_remote_result(worker: str, outcome: str, seconds: float | None = None) -> None:
    """Remote worker ``worker`` sent a result; ``seconds`` from lease to accepted result."""
    m = metrics()
    m.remote_results.labels(worker, outcome).inc()
    if seconds is not None:
        m.remote_lease_seconds.labels(worker).observe(max(0.0, seconds))


def record_remote_expiry(worker: str) -> None:
    """A lease of ``worker`` ran out unanswered."""
    metrics().remote_expired.labels(worker).inc()


def record_remote_refused(reason: str) -> None:
    """A worker API call was refused (never labelled with the token, only the reason)."""
    metrics().remote_refused.labels(reason).inc()


def record_remote_client_result(outcome: str, count: int = 1) -> None:
    """This remote worker's results, by how the server took them."""
    if count:
        metrics().remote_client_results.labels(outcome).inc(count)


def watch_remote_workers(
    workers: Mapping[str, tuple[Callable[[], bool], Callable[[], int]]],
    queued: Mapping[str, Callable[[], int]],
) -> None:
    """Read each worker's connected state and lease count, and the queue per lane, from the
    dispatcher at every scrape."""
    m = metrics()
    for worker, (connected, leases) in workers.items():
        m.remote_connected.labels(worker).set_function(_as_float(connected))
        m.remote_leased_now.labels(worker).set_function(_as_float(leases))
    for lane, count in queued.items():
        m.remote_queued.labels(lane).set_function(_as_float(count))


def _as_float(read: Callable[[], bool] | Callable[[], int]) -> Callable[[], float]:
    return lambda: float(read())


def set_consumer_lag(group: str, lags: Mapping[tuple[str, int], int]) -> None:
    """The lag of ``group`` per (topic, partition), as just sampled."""
    metrics().set_lag(group, lags)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: this process's series (text format, or OpenMetrics if asked for).

    validate_api mounts it on its own app: ``app.add_route("/metrics", metrics_endpoint)``.
    """
    from starlette.responses import Response

    body, content_type = metrics().expose(request.headers.get("accept"))
    return Response(body, media_type=content_type)
