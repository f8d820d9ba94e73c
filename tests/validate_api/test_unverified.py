"""Fail-open that admins hear about: uploads accepted without a verdict are counted by the API,
carried over the bus, and told to the admins as a warning digest (count, reasons, window);
/readyz and the metrics say when the classifier path is down; overload follows
``api.on_overload``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from enforce.notify import Notifier
from enforce.notify.message import render_subject, render_text
from enforce.notify.unverified import UnverifiedDigest
from enforce.settings import NotifySettings
from pictguard.processes import unscanned_uploads
from pictguard.settings import Settings, load_settings
from pipeline.bus.base import BusError, Outgoing
from pipeline.bus.memory import MemoryBus
from pipeline.events import ActionType, Decision, UnverifiedAccepts, decode
from pipeline.policy import ActionPolicy
from tests.classify.remote.media import clean
from tests.enforce.receivers import http_receiver
from tests.media import corrupt_jpeg, video
from tests.servers import Broker, free_port, wait_until
from tests.validate_api.dropin import (
    launch,
    metric,
    pictrs_validate,
    unverified_counts,
    unverified_notices,
    webhook,
)
from tests.validate_api.helpers import CLIENT, Stack, kafka_config, wait_ready
from validate_api.settings import ApiSettings, rejected_decisions
from validate_api.unverified import ClassifierPath, UnverifiedReporter

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(replica: str, at: datetime, **counts: int) -> UnverifiedAccepts:
    return UnverifiedAccepts(
        replica=replica,
        counts=counts,  # type: ignore[arg-type]
        details={r: f"why {r}" for r in counts},  # type: ignore[misc]
        first_at=at,
        last_at=at + timedelta(seconds=1),
    )


# -- the pieces --------------------------------------------------------------------------


async def test_the_first_report_goes_out_at_once_the_rest_once_per_interval() -> None:
    clock = FakeClock()
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {
                "channels": [webhook(rx.url, min_severity="warning")],
                "unverified_interval_s": 600,
                "instance": "lemmy.example",
            }
        )
        notifier = Notifier(settings)
        await notifier.start()
        digest = UnverifiedDigest(notifier, settings, clock=clock)
        digest.add(report("api-a", T0, timeout=1))
        assert digest.due_in() == 0
        await digest.flush()
        # Within the interval: summed, from every replica, not sent yet.
        digest.add(report("api-a", T0 + timedelta(minutes=2), timeout=3, video=2))
        digest.add(report("api-b", T0 + timedelta(minutes=5), overload=1))
        assert digest.due_in() == 600
        clock.now += 600
        assert digest.due_in() == 0
        await digest.flush()
        await digest.flush()  # nothing new: nothing sent
        await notifier.stop()
    # Deliveries are concurrent and retried: on a busy machine they may arrive in either
    # order, so they are told apart by the window they cover.
    first, second = sorted((r.json() for r in rx.requests), key=lambda body: body["since"])
    assert (first["event"], first["severity"], first["count"]) == (
        "unverified_accepts",
        "warning",
        1,
    )
    assert first["reasons"] == {"timeout": 1}
    assert second["count"] == 6
    assert second["reasons"] == {"timeout": 3, "video": 2, "overload": 1}
    assert second["since"] == (T0 + timedelta(minutes=2)).isoformat()
    assert second["until"] == (T0 + timedelta(minutes=5, seconds=1)).isoformat()
    assert render_subject(second) == (
        "WARNING: 6 uploads accepted without a verdict (timeout 3, video 2, overload 1) "
        "between 2025-03-01 12:02:00 and 12:05:01 UTC"
    )
    text = render_text(second)
    assert text.startswith("[WARNING] pictguard lemmy.example: 6 uploads accepted without")
    assert "Next step: no verdict by api.deadline_s: is classify running" in text
    assert "pictguard does not classify video" in text and "ingest.reconcile" in text


class RefusingBus(MemoryBus):
    """An in-process bus whose broker refuses records until ``refuse`` is cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = True

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        if self.refuse:
            raise BusError("broker unreachable")
        await super().produce_many(records)


async def test_counts_survive_a_bus_that_refuses_them_and_go_out_once_it_takes_them() -> None:
    times = iter(T0 + timedelta(seconds=s) for s in range(10))
    bus = RefusingBus()
    tap = bus.consumer(["t.unverified"], "tap")
    await tap.start()
    reporter = UnverifiedReporter(bus, "t.unverified", "api-a", now=lambda: next(times))
    reporter.add("timeout", "no verdict within 8 s")
    reporter.add("timeout", "no verdict within 8 s")
    reporter.add("video", "video/mp4 is not scanned")
    await reporter.flush()
    assert reporter.pending == 3  # kept for the next try
    reporter.add("overload", "more than 256 uploads in flight")
    bus.refuse = False
    await reporter.flush()
    assert reporter.pending == 0
    [message] = await tap.getmany(0, 10)
    record = decode(message.value, UnverifiedAccepts)
    assert record.counts == {"timeout": 2, "video": 1, "overload": 1}
    assert (record.first_at, record.last_at) == (T0, T0 + timedelta(seconds=3))
    assert record.details["video"] == "video/mp4 is not scanned"


def test_api_reject_follows_enforce_unless_set() -> None:
    def policy(nsfw: ActionType) -> ActionPolicy:
        return ActionPolicy({Decision.FLAG_CSAM: ActionType.QUARANTINE, Decision.FLAG_NSFW: nsfw})

    unset = ApiSettings()
    # Nudity kept in storage (report, the default): kept at upload too, as pictrs-safety.
    assert rejected_decisions(unset, policy(ActionType.REPORT)) == {Decision.FLAG_CSAM}
    # Nudity removed from storage: refused at the door instead.
    for removed in (ActionType.QUARANTINE, ActionType.DELETE):
        assert rejected_decisions(unset, policy(removed)) == {
            Decision.FLAG_CSAM,
            Decision.FLAG_NSFW,
        }
    both = ApiSettings(reject=["flag_csam", "flag_nsfw"])
    assert rejected_decisions(both, policy(ActionType.REPORT)) == {
        Decision.FLAG_CSAM,
        Decision.FLAG_NSFW,
    }
    assert rejected_decisions(ApiSettings(reject=[]), policy(ActionType.DELETE)) == set()
    with pytest.raises(ValueError, match="reject"):
        ApiSettings(reject=["allow"])  # type: ignore[list-item]


def test_the_classifier_path_is_down_after_consecutive_misses_and_up_at_the_next_verdict() -> None:
    path = ClassifierPath(degraded_after=3)
    path.miss("timeout")
    path.miss("timeout")
    assert not path.down and path.reason() is None
    path.miss("unavailable")
    assert path.down
    assert "the last 3 uploads that needed classify got no verdict (last: unavailable)" in str(
        path.reason()
    )
    path.verdict()
    assert not path.down


def test_the_shipped_single_box_configuration_rescans_what_it_accepts() -> None:
    settings = load_settings(ROOT / "docker" / "config" / "single.yaml")
    assert unscanned_uploads(settings) == []
    assert settings.ingest.watch.enabled and settings.ingest.watch.roots
    # The quarantine must not lie inside the watched folder (it would be rescanned).
    quarantine = Path(settings.enforce.quarantine)
    assert quarantine.is_absolute()
    assert not any(quarantine.is_relative_to(root) for root in settings.ingest.watch.roots)


def test_serve_warns_when_nothing_rescans_what_it_accepts() -> None:
    strict = {"on_timeout": "reject", "on_error": "reject", "video": "reject"}

    def warnings(**sections: Any) -> list[str]:
        return unscanned_uploads(Settings.model_validate(sections))

    [warning] = warnings()
    assert "(api.on_timeout=accept; api.on_error=accept)" in warning  # video: scanned
    [warning] = warnings(api={"video": "accept"})
    assert "api.on_timeout=accept; api.on_error=accept; api.video=accept" in warning
    assert warnings(api=strict) == []
    # A flag enforce removes from storage, accepted at upload, also needs a rescan.
    [warning] = warnings(
        api={**strict, "reject": ["flag_csam"]}, enforce={"on_flag_nsfw": "quarantine"}
    )
    assert "flag_nsfw is accepted (api.reject) while enforce.on_flag_nsfw=quarantine" in warning
    assert warnings(api={**strict, "on_overload": "accept"}) != []
    csam, rescan = warnings(api={**strict, "reject": []})
    assert csam.startswith("api.reject leaves out flag_csam")
    assert "flag_csam is accepted (api.reject) while enforce.on_flag_csam=quarantine" in rescan
    watched = {"watch": {"enabled": True, "roots": ["/srv/pictrs/files"]}}
    assert warnings(ingest=watched) == []


# -- one process: `pictguard serve` ----------------------------------------------------


async def test_video_and_unclassifiable_uploads_accepted_unverified_reach_the_admins(
    tmp_path: Path,
) -> None:
    port = free_port()
    with http_receiver() as rx:
        config = {
            "storage": {"state_dir": str(tmp_path / "state")},
            "classify": {"classifiers": ["hashlist", "colour"]},
            "enforce": {
                # The warning channel only: no per-action info messages in the way.
                "notify": {
                    "channels": [webhook(rx.url, min_severity="warning")],
                    "unverified_interval_s": 1,
                }
            },
            "api": {
                "host": "127.0.0.1",
                "port": port,
                "deadline_s": 5,
                "video": "accept",  # the default scans video; this test lets it through
                "clients": [{"id": CLIENT, "cidrs": ["127.0.0.0/8"]}],
            },
        }
        stack = Stack([f"http://127.0.0.1:{port}"], config)
        launch(stack, ["serve"], config, tmp_path, "serve")
        try:
            wait_ready(stack)
            url = f"{stack.url}/api/v1/scan/{CLIENT}"
            clip = await pictrs_validate(url, video(41, 320, 240, seconds=1.0), "video/mp4")
            assert clip.status_code == 200 and clip.json()["path"] == "video"
            assert "not scanned" in clip.json()["unverified"]
            broken = await pictrs_validate(url, corrupt_jpeg(42), "image/jpeg")
            assert broken.status_code == 200 and broken.json()["decision"] == "error"
            assert "could not classify" in broken.json()["unverified"]
            fine = await pictrs_validate(url, clean(43), "image/jpeg")
            assert fine.status_code == 200 and "unverified" not in fine.json()

            await asyncio.to_thread(
                wait_until,
                lambda: unverified_counts(rx) == {"video": 1, "error": 1},
                60,
                "the warning about the unverified uploads",
            )
            for notice in unverified_notices(rx):
                assert notice["severity"] == "warning"
                assert notice["since"] <= notice["until"]
            assert metric(stack.url, "pictguard_unverified_accepts_total", reason="video") == 1
            assert metric(stack.url, "pictguard_unverified_accepts_total", reason="error") == 1
            # A video is not a classifier outage.
            assert httpx.get(f"{stack.url}/readyz", timeout=10).json() == {"status": "ready"}
        finally:
            stack.stop()


# -- distributed: API replicas and enforce on Kafka, classify down -----------------------


async def _until_inflight(url: str, n: int) -> None:
    await asyncio.to_thread(
        wait_until,
        lambda: metric(url, "pictguard_api_inflight") >= n,
        60,
        f"{n} upload(s) in flight on {url}",
    )


async def test_overload_policy_and_a_down_classifier_over_kafka(
    broker: Broker, tmp_path: Path
) -> None:
    """Two API replicas (``on_overload: accept`` and ``reject``) with room for one upload,
    enforce with a notification channel, and no classify at all: every upload that gets
    through waits for its deadline and is accepted unverified."""
    prefix = f"ov{os.getpid()}{int(time.time() * 1000) % 100000}."
    ports = {"accept": free_port(), "reject": free_port()}
    with http_receiver() as rx:
        stack = Stack([f"http://127.0.0.1:{p}" for p in ports.values()], {})
        enforce_cfg = kafka_config(tmp_path / "enforce", broker, prefix, rx.url)
        enforce_cfg["enforce"]["notify"] = {
            "channels": [webhook(rx.url, min_severity="warning")],
            "unverified_interval_s": 1,
        }
        # Enforce on Kafka wants a quarantine location named before a live run starts.
        enforce_cfg["enforce"]["quarantine"] = str(tmp_path / "quarantine")
        launch(stack, ["run", "enforce"], enforce_cfg, tmp_path, "enforce")
        for policy, port in ports.items():
            cfg = kafka_config(
                tmp_path / policy,
                broker,
                prefix,
                port=port,
                replica_id=f"replica-{policy}",
                max_inflight=1,
                on_overload=policy,
                degraded_after=1,
                # Long enough that the upload holding the one slot is still there when the
                # next arrives, however busy the machine.
                deadline_s=20,
                force_deadline=True,
            )
            launch(stack, ["run", "api"], cfg, tmp_path, f"api-{policy}")
        try:
            wait_ready(stack)
            accept_url, reject_url = stack.urls
            holders = [
                asyncio.create_task(
                    pictrs_validate(f"{u}/api/v1/scan/{CLIENT}", clean(50 + i), "image/jpeg")
                )
                for i, u in enumerate(stack.urls)
            ]
            await _until_inflight(accept_url, 1)
            await _until_inflight(reject_url, 1)

            big = clean(60, 1600, 1200)  # streamed in full before the answer
            kept = await pictrs_validate(f"{accept_url}/api/v1/scan/{CLIENT}", big, "image/jpeg")
            assert kept.status_code == 200, kept.text
            assert (kept.json()["path"], kept.json()["decision"]) == ("overload", None)
            assert "api.on_overload=accept" in kept.json()["unverified"]
            refused = await pictrs_validate(f"{reject_url}/api/v1/scan/{CLIENT}", big, "image/jpeg")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "2"
            for url in stack.urls:
                assert metric(url, "pictguard_sync_validations_total", outcome="overloaded") == 1

            # The slot holders get no verdict (no classify) and are accepted per on_timeout.
            for answer in await asyncio.gather(*holders):
                assert answer.status_code == 200
                assert answer.json()["path"] == "timeout"
            for url in stack.urls:
                ready = httpx.get(f"{url}/readyz", timeout=10)
                assert ready.status_code == 200  # never taken out of the Service for it
                assert "classifier path down" in ready.json()["degraded"]
                assert metric(url, "pictguard_api_classifier_down") == 1

            # Enforce, another process, tells the admins: one overload, two timeouts.
            await asyncio.to_thread(
                wait_until,
                lambda: unverified_counts(rx) == {"overload": 1, "timeout": 2},
                60,
                "the warning about the unverified uploads",
            )
        finally:
            stack.stop()
