"""The worker API over real loopback HTTP: leases, their expiry and ownership, token scope,
revocation, rate limits, and secrets kept out of logs and metrics."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import httpx
import pytest

from classify.engine import ClassifyEngine
from classify.remote.protocol import LEASE_PATH, POP_PATH
from classify.remote.worker import RemoteWorker, WorkerRefused
from pictguard.settings import Settings
from pipeline.events import Decision, Lane
from pipeline.state.memory import MemoryTable
from pipeline.state.shared import SharedTables
from tests.classify.remote import media
from tests.classify.remote.harness import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    LEASE_S,
    TOKENS,
    ManualWorker,
    instance,
)
from tests.colour_model import ColourModel  # noqa: F401 — registers the "colour" classifier


async def colour_engine(max_batch: int = 8) -> ClassifyEngine:
    settings = Settings().classify.model_copy(
        update={"classifiers": ["hashlist", "colour"], "max_batch": max_batch, "max_wait_ms": 5}
    )
    engine = ClassifyEngine(settings, SharedTables(MemoryTable("h"), MemoryTable("c")))
    await engine.start()
    return engine


async def test_two_workers_classify_every_request_once(tmp_path: Path) -> None:
    images = [media.clean(i) for i in range(10)]
    images += [media.washed(100, media.MAGENTA), media.washed(101, media.RED)]
    async with instance(tmp_path) as inst:
        engines = [await colour_engine(), await colour_engine()]
        workers = [
            RemoteWorker(inst.url, TOKENS[name], engine, max_batch=4, wait_s=2)
            for name, engine in zip(("gpu-a", "gpu-b"), engines, strict=True)
        ]
        stop = asyncio.Event()
        running = [asyncio.create_task(w.run(stop)) for w in workers]
        ids = [await inst.publish(data) for data in images]
        sync_id = await inst.publish(media.clean(50), Lane.SYNC)
        await inst.wait_for("every verdict", lambda: len(inst.verdicts) >= len(ids) + 1)
        stop.set()
        await asyncio.gather(*running)
        for engine in engines:
            await engine.stop()

    assert inst.per_request() == {rid: 1 for rid in [*ids, sync_id]}
    by_id = {v.request_id: v for v in inst.verdicts}
    assert [by_id[rid].decision for rid in ids[-2:]] == [Decision.FLAG_CSAM, Decision.FLAG_NSFW]
    assert {by_id[rid].decision for rid in ids[:-2]} == {Decision.ALLOW}
    assert {v.worker for v in inst.verdicts} <= {"gpu-a", "gpu-b"}
    assert all(v.model_version == "colour:1" for v in inst.verdicts)
    # The server checked the bytes: the sha256 is that of what was published.
    assert by_id[ids[0]].sha256 == hashlib.sha256(images[0]).hexdigest()


async def test_a_lease_belongs_to_its_worker_until_it_runs_out(tmp_path: Path) -> None:
    async with instance(tmp_path) as inst:
        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        b = ManualWorker(inst.url, TOKENS["gpu-b"])
        request_id = await inst.publish(media.clean(1))
        (job,) = await a.jobs(most=4)
        assert job["request_id"] == request_id
        assert (await a.content(job)).content == media.clean(1)

        # Another worker can neither read nor answer it.
        assert (await b.content(job)).status_code == 404
        answer = await b.answer(job["lease"], "flag_csam")
        assert answer.json() == {"accepted": [], "refused": {job["lease"]: "not_leased"}}
        # Nor can anyone answer it about other bytes.
        other = hashlib.sha256(b"other").hexdigest()
        answer = await a.answer(job["lease"], "allow", sha256=other)
        assert answer.json()["refused"] == {job["lease"]: "mismatch"}

        # The lease runs out: the request goes to the next worker that asks.
        inst.clock.advance(LEASE_S + 1)
        assert (await a.content(job)).status_code == 410
        (again,) = await b.jobs(most=4)
        assert again["request_id"] == request_id and again["lease"] != job["lease"]
        late = await a.answer(job["lease"], "flag_csam")
        assert late.json()["refused"] == {job["lease"]: "expired"}
        taken = await b.answer(again["lease"], "allow", model_version="m:1")
        assert taken.json() == {"accepted": [again["lease"]], "refused": {}}
        # Answered once: a second answer is refused.
        twice = await b.answer(again["lease"], "flag_csam")
        assert twice.json()["refused"] == {again["lease"]: "expired"}

        await inst.wait_for("the verdict", lambda: inst.verdicts)
        metrics_text = (await b.client.get("/metrics")).text
        await a.aclose()
        await b.aclose()
        await inst.wait_for("nothing left", lambda: inst.dispatcher.leased == 0)

    assert inst.per_request() == {request_id: 1}
    assert inst.verdicts[0].worker == "gpu-b" and inst.verdicts[0].decision is Decision.ALLOW
    assert 'pictguard_remote_lease_expiries_total{worker="gpu-a"} 1.0' in metrics_text
    assert 'pictguard_remote_results_total{outcome="accepted",worker="gpu-b"} 1.0' in metrics_text


async def test_uploads_are_leased_before_the_backlog(tmp_path: Path) -> None:
    async with instance(tmp_path) as inst:
        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        await a.lease(most=1, wait_s=0)  # a worker is connected: the bus may be read
        bulk = [await inst.publish(media.clean(i)) for i in range(3)]
        await inst.wait_for("the backlog queued", lambda: inst.dispatcher.queued(Lane.BULK) == 3)
        upload = await inst.publish(media.clean(9), Lane.SYNC)
        await inst.wait_for("the upload queued", lambda: inst.dispatcher.queued(Lane.SYNC) == 1)
        jobs = await a.jobs(most=2)
        assert [j["request_id"] for j in jobs] == [upload, bulk[0]]
        assert [j["lane"] for j in jobs] == ["sync", "bulk"]
        await a.aclose()


async def test_worker_tokens_open_the_worker_api_only(tmp_path: Path) -> None:
    async with (
        instance(tmp_path) as inst,
        httpx.AsyncClient(base_url=inst.url, timeout=10) as http,
    ):

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        lease = {"max": 1, "wait_s": 0}
        # Worker tokens open nothing else: the scan API, the admin API.
        for token in (TOKENS["gpu-a"], TOKENS["fedi"]):
            check = await http.post(
                "/api/v1/check",
                params={"client_id": "script", "token": token},
                content=media.clean(1),
            )
            assert check.status_code == 401
            admin = await http.get("/admin/workers", headers=bearer(token))
            assert admin.status_code == 401
        # No other token opens the worker API.
        for token in (ADMIN_TOKEN, CLIENT_TOKEN, "x" * 32, "short"):
            assert (
                await http.post(LEASE_PATH, json=lease, headers=bearer(token))
            ).status_code == 401
            assert (await http.get(POP_PATH, headers={"apikey": token})).status_code == 403
        assert (await http.post(LEASE_PATH, json=lease)).status_code == 401
        # Each protocol's token opens its own endpoints only.
        wrong = await http.post(LEASE_PATH, json=lease, headers=bearer(TOKENS["fedi"]))
        assert wrong.status_code == 401
        assert (await http.get(POP_PATH, headers={"apikey": TOKENS["gpu-a"]})).status_code == 403
        # The right ones do.
        right = await http.post(LEASE_PATH, json=lease, headers=bearer(TOKENS["gpu-a"]))
        assert right.status_code == 200 and right.json()["worker"] == "gpu-a"
        assert (await http.get(POP_PATH, headers={"apikey": TOKENS["fedi"]})).status_code == 204
        refused = (await http.get("/metrics")).text
    assert 'pictguard_remote_refused_calls_total{reason="bad_token"}' in refused
    assert 'pictguard_remote_refused_calls_total{reason="wrong_protocol"} 2.0' in refused


async def test_a_revoked_worker_is_refused_and_its_leases_go_to_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with instance(tmp_path) as inst:
        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        b = ManualWorker(inst.url, TOKENS["gpu-b"])
        request_id = await inst.publish(media.clean(3))
        (job,) = await a.jobs()
        async with httpx.AsyncClient(base_url=inst.url, timeout=10) as http:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            revoked = await http.post("/admin/workers/gpu-a/revoke", headers=admin)
            assert revoked.status_code == 200
            status = (await http.get("/admin/workers", headers=admin)).json()
        assert {w["id"]: w["revoked"] for w in status["workers"]}["gpu-a"] is True
        # Its answer is refused, and so is everything else it tries.
        assert (await a.answer(job["lease"], "flag_csam")).status_code == 401
        assert (await a.content(job)).status_code == 401
        assert (await a.lease()).status_code == 401
        # The request went straight back to the queue, no lease time lost.
        (again,) = await b.jobs()
        assert again["request_id"] == request_id
        assert (await b.answer(again["lease"], "allow")).json()["accepted"] == [again["lease"]]
        await inst.wait_for("the verdict", lambda: inst.verdicts)
        metrics_text = (await b.client.get("/metrics")).text
        await a.aclose()
        await b.aclose()

    assert inst.per_request() == {request_id: 1}
    assert inst.verdicts[0].worker == "gpu-b"
    assert 'pictguard_remote_refused_calls_total{reason="revoked"} 3.0' in metrics_text
    # Secrets appear in no log line and no metric.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in [*TOKENS.values(), ADMIN_TOKEN, CLIENT_TOKEN]:
        assert secret not in logged
        assert secret not in metrics_text
    assert "worker gpu-a is revoked" in logged


async def test_a_worker_over_its_rate_gets_429(tmp_path: Path) -> None:
    # The fake clock stands still, so no call is refilled: exactly the burst goes through.
    async with instance(tmp_path, rate_per_s=1, burst=3) as inst:
        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        statuses = [(await a.lease(wait_s=0)).status_code for _ in range(5)]
        limited = await a.lease(wait_s=0)
        b = ManualWorker(inst.url, TOKENS["gpu-b"])
        other = await b.lease(wait_s=0)  # each worker has its own limit
        inst.clock.advance(1.0)
        refilled = await a.lease(wait_s=0)
        await a.aclose()
        await b.aclose()
    assert statuses == [200, 200, 200, 429, 429]
    assert limited.headers["retry-after"] == "1"
    assert other.status_code == 200
    assert refilled.status_code == 200


async def test_a_request_no_worker_answers_ends_as_an_error_verdict(tmp_path: Path) -> None:
    async with instance(tmp_path, max_attempts=2) as inst:
        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        request_id = await inst.publish(media.clean(4))
        for _ in range(2):
            (job,) = await a.jobs()
            assert job["request_id"] == request_id
            inst.clock.advance(LEASE_S + 1)
        await inst.wait_for("the verdict", lambda: inst.verdicts)
        assert await a.jobs(wait_s=0) == []
        await a.aclose()
    (verdict,) = inst.verdicts
    assert verdict.decision is Decision.ERROR and verdict.reason is not None
    assert verdict.reason.value == "model_failed"
    assert "2 remote workers took it" in (verdict.detail or "")


async def test_without_a_worker_requests_stay_on_the_bus_and_readyz_says_why(
    tmp_path: Path,
) -> None:
    async with (
        instance(tmp_path) as inst,
        httpx.AsyncClient(base_url=inst.url, timeout=10) as http,
    ):
        before = await http.get("/readyz")
        request_id = await inst.publish(media.clean(5))
        bus = inst.runtime.bus
        topic = inst.runtime.settings.topic("scan-requests.bulk")
        await inst.wait_for("the request on the bus", lambda: bus.backlog(topic) == 1)  # type: ignore[attr-defined]
        assert inst.dispatcher.queued(Lane.BULK) == 0  # not taken while nobody wants it

        a = ManualWorker(inst.url, TOKENS["gpu-a"])
        (job,) = await a.jobs(wait_s=10)  # a worker asks: the gate opens, the lease follows
        assert job["request_id"] == request_id
        after = await http.get("/readyz")
        await a.aclose()
    assert before.status_code == 503
    assert "no remote worker connected and no local classifier runs" in before.json()["message"]
    assert after.status_code == 200


async def test_a_worker_whose_token_is_refused_stops_with_one_clear_error(tmp_path: Path) -> None:
    async with instance(tmp_path) as inst:
        engine = await colour_engine()
        stranger = RemoteWorker(inst.url, "not-a-worker-token-0123456789", engine, max_batch=2)
        with pytest.raises(WorkerRefused, match="refused this worker's token"):
            await asyncio.wait_for(stranger.run(asyncio.Event()), 30)
        await engine.stop()
