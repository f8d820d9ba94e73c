"""The metrics endpoint: a real scan, then a real scrape over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from pictguard.scan import run_scan
from pictguard.settings import load_settings
from pipeline.events import Decision, ScanRequest
from pipeline.health import Health, HealthPortError, start_metrics_server
from pipeline.metrics import (
    Metrics,
    SyncOutcome,
    record_sync_outcome,
    set_consumer_lag,
)
from pipeline.settings import MetricsSettings
from tests.observability.helpers import GREY, MAGENTA, MODEL, png, samples, value
from tests.servers import FAST_GROUPS, Broker, free_port

CLEAN = [png((GREY[0] + i, GREY[1], GREY[2] - i)) for i in range(5)]
FLAGGED = [png(MAGENTA), png((245, 0, 250))]
CORRUPT = [b"\x89PNG\r\n\x1a\nnot really"]


async def test_scrape_after_a_scan_shows_every_series(
    tmp_path: Path, fresh_metrics: Metrics
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for name, data in [
        *((f"clean{i}.png", d) for i, d in enumerate(CLEAN)),
        *((f"flagged{i}.png", d) for i, d in enumerate(FLAGGED)),
        *((f"corrupt{i}.png", d) for i, d in enumerate(CORRUPT)),
    ]:
        (media / name).write_bytes(data)
    settings = load_settings(
        storage={"state_dir": str(tmp_path / "state")},
        classify={"classifiers": ["hashlist", MODEL]},
        enforce={"on_flag_csam": "quarantine", "quarantine": str(tmp_path / "q")},
    )
    health = Health()
    ready = asyncio.Event()
    health.add("scan", ready.is_set)
    server = await start_metrics_server(MetricsSettings(host="127.0.0.1", port=0), health)
    assert server is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503 and "scan" in not_ready.text

            summary = await run_scan(settings, str(media))
            ready.set()
            record_sync_outcome(SyncOutcome.CACHE_HIT, 0.004)

            assert (await http.get("/readyz")).status_code == 200
            response = await http.get("/metrics")
    finally:
        await server.close()

    assert summary.completed and summary.scanned == 8
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    assert value(found, "pictguard_scan_requests_total", source="backfill", lane="bulk") == 8
    assert value(found, "pictguard_verdicts_total", decision="allow") == len(CLEAN)
    assert value(found, "pictguard_verdicts_total", decision="flag_csam") == len(FLAGGED)
    assert value(found, "pictguard_verdicts_total", decision="error") == len(CORRUPT)
    assert value(found, "pictguard_verdicts_total", decision="flag_nsfw") == 0  # pre-created
    assert value(found, "pictguard_images_scanned_total", path="model") == 7
    assert value(found, "pictguard_images_scanned_total", path="error") == 1
    assert value(found, "pictguard_errors_total", stage="classify", reason="undecodable") == 1

    # Every request went through the histogram; seconds, not hours, on this machine.
    assert value(found, "pictguard_enqueue_to_verdict_seconds_count", lane="bulk") == 8
    assert 0 < value(found, "pictguard_enqueue_to_verdict_seconds_sum", lane="bulk") < 8 * 60
    assert value(found, "pictguard_enqueue_to_verdict_seconds_bucket", lane="bulk", le="+Inf") == 8

    # The decodable images went through the model, in at least one batch.
    batches = value(found, "pictguard_model_batch_size_count", model=MODEL)
    assert 1 <= batches <= 7
    assert value(found, "pictguard_model_batch_size_sum", model=MODEL) == 7
    assert value(found, "pictguard_model_batch_seconds_count", model=MODEL) == batches
    assert value(found, "pictguard_model_batch_seconds_sum", model=MODEL) > 0

    assert value(found, "pictguard_actions_total", action="quarantine", outcome="done") == 2
    assert value(found, "pictguard_guard_tripped") == 0

    # The in-process bus reports its queue per group; all drained at the end.
    assert (
        value(
            found,
            "pictguard_consumer_lag",
            group="pictguard-classify",
            topic="pictguard.scan-requests.bulk",
        )
        == 0
    )
    assert value(found, "pictguard_consumer_lag", group="pictguard-enforce") == 0

    assert value(found, "pictguard_sync_validations_total", outcome="cache_hit") == 1
    assert value(found, "pictguard_sync_validations_total", outcome="answered") == 0
    assert value(found, "pictguard_sync_validations_total", outcome="timed_out") == 0
    assert value(found, "pictguard_sync_validation_seconds_count", outcome="cache_hit") == 1
    assert value(found, "process_cpu_seconds_total") > 0
    assert summary.decisions[Decision.FLAG_CSAM] == 2


async def test_the_guard_gauge_follows_the_guard(tmp_path: Path, fresh_metrics: Metrics) -> None:
    from enforce.guard import Guard
    from enforce.settings import GuardSettings
    from pipeline.metrics import watch_guard
    from pipeline.state.sqlite import SqliteState

    state = SqliteState(tmp_path / "s.sqlite3")
    await state.start()
    try:
        guard = Guard(GuardSettings(max_destructive_per_minute=1), state)
        await guard.start()
        watch_guard(lambda: guard.trip is not None)

        def gauge() -> float:
            return value(samples(fresh_metrics.expose()[0].decode()), "pictguard_guard_tripped")

        assert gauge() == 0
        assert (await guard.admit())[0]
        allowed, trip = await guard.admit()  # the second delete in a minute trips it
        assert not allowed and trip is not None
        assert gauge() == 1
        await guard.resume()
        assert gauge() == 0
    finally:
        await state.stop()


def test_lag_of_partitions_a_group_lost_is_dropped(fresh_metrics: Metrics) -> None:
    set_consumer_lag("g", {("t", 0): 5, ("t", 1): 7})
    set_consumer_lag("g", {("t", 1): 2})  # partition 0 went to another member
    found = samples(fresh_metrics.expose()[0].decode())
    lags = {
        dict(labels)["partition"]: v
        for (name, labels), v in found.items()
        if name == "pictguard_consumer_lag"
    }
    assert lags == {"1": 2}


async def test_a_taken_port_is_an_error_naming_the_setting(fresh_metrics: Metrics) -> None:
    # A role without its probes and metrics would fail unnoticed: it must not start.
    first = await start_metrics_server(MetricsSettings(host="127.0.0.1", port=0))
    try:
        with pytest.raises(HealthPortError, match=rf"127.0.0.1:{first.port}.*METRICS__PORT"):
            await start_metrics_server(MetricsSettings(host="127.0.0.1", port=first.port))
    finally:
        await first.close()


def test_stale_requests_are_not_counted_as_negative_latency(fresh_metrics: Metrics) -> None:
    from pipeline.events import Verdict, utcnow
    from pipeline.metrics import record_verdict

    request = ScanRequest(content=b"x")
    verdict = Verdict(request_id=request.request_id, decision=Decision.ALLOW)
    # Another host's clock ahead of ours must not make a negative observation.
    record_verdict(verdict, utcnow(), request.created_at)
    found = samples(fresh_metrics.expose()[0].decode())
    assert value(found, "pictguard_enqueue_to_verdict_seconds_sum", lane="bulk") == 0
    assert value(found, "pictguard_enqueue_to_verdict_seconds_count", lane="bulk") == 1


async def test_a_role_process_serves_probes_and_metrics(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICTGUARD_", "OTEL_"))}
    env.update(
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=f"r{uuid.uuid4().hex[:8]}.",
        PICTGUARD_KAFKA__PARTITIONS="1",
        PICTGUARD_KAFKA__CONSUMER_OVERRIDES=json.dumps(FAST_GROUPS),
        PICTGUARD_STORAGE__STATE_DIR=str(tmp_path / "state"),
        PICTGUARD_METRICS__HOST="127.0.0.1",
        PICTGUARD_METRICS__PORT=str(port),
        # No quarantine location shared by replicas is configured here.
        PICTGUARD_ENFORCE__DRY_RUN="true",
    )
    log = (tmp_path / "enforce.log").open("wb")
    role = subprocess.Popen(
        [sys.executable, "-m", "pictguard.cli", "run", "enforce"], env=env, stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            ready = None
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    ready = await http.get("/readyz")
                    if ready.status_code == 200:
                        break
                assert role.poll() is None, (tmp_path / "enforce.log").read_text()
                await asyncio.sleep(0.1)
            assert ready is not None and ready.status_code == 200, "never ready"
            assert (await http.get("/healthz")).status_code == 200
            found = samples((await http.get("/metrics")).text)
        assert value(found, "pictguard_guard_tripped") == 0
        assert value(found, "pictguard_build_info") == 1
        assert value(found, "pictguard_actions_total", action="delete", outcome="done") == 0
    finally:
        role.send_signal(signal.SIGTERM)
        assert role.wait(30) == 0, (tmp_path / "enforce.log").read_text()
