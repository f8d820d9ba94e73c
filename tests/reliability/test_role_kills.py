"""SIGKILL each role mid-stream over Kafka, restart it: nothing lost, nothing acted on twice.

Classify killed mid-batch is tests/pipeline/test_kafka_pipeline.py::
test_classify_killed_mid_run_loses_nothing_and_acts_once; this file kills the others: the
backfill (ingest of a whole bucket) mid-listing, enforce in the middle of quarantining,
and the validate API with uploads waiting for their verdicts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from pipeline.samples import image_bytes
from tests.corpus import make_corpus
from tests.faultproxy import Fault, FaultProxy
from tests.kafka_roles import (
    PICTGUARD,
    Roles,
    backfill,
    outcomes,
    quarantined_keys,
    role_env,
    seed_bucket,
    wait_for,
)
from tests.reliability.audit import acted_once, destructive_outcomes, record
from tests.servers import Broker, S3Server, bucket_keys, count_records, free_port, wait_until


def records_in(broker: Broker, topic: str) -> int:
    """How many records ``topic`` holds (nothing is deleted here)."""
    return asyncio.run(count_records(broker.bootstrap, topic))


def checkpoint(state_dir: Path) -> str | None:
    path = state_dir / "pictguard.sqlite3"
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM checkpoints LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def test_backfill_killed_mid_listing_resumes_without_losing_objects(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(300, blocked=6, corrupt=2, non_images=2)
    quarantine = seed_bucket(s3_server, bucket, corpus, broker, topic_prefix)
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_INGEST__CHECKPOINT_EVERY="40",
        PICTGUARD_INGEST__BATCH_SIZE="20",
    )
    for role in ("classify", "enforce"):
        roles.start(role, {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / role)})
    listing_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}
    lister = subprocess.Popen(
        [*PICTGUARD, "backfill", f"s3://{bucket}", "--rate-limit", "60"],
        env=listing_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: checkpoint(tmp_path / "backfill") is not None, 60, "a checkpoint")
    finally:
        lister.send_signal(signal.SIGKILL)
        lister.wait(10)
    topic = f"{topic_prefix}scan-requests.bulk"
    before = records_in(broker, topic)
    assert 0 < before < len(corpus.objects)  # killed mid-listing

    backfill(listing_env, bucket)  # the same command again: resumes after the checkpoint
    wait_for(tmp_path / "enforce", len(corpus.objects))
    roles.stop_all()
    seen = outcomes(tmp_path / "enforce")
    total = records_in(broker, topic)

    assert seen["objects"] == len(corpus.objects)  # 0 objects without a verdict
    blocked = {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert acted_once(destructive_outcomes(tmp_path / "enforce"), blocked) == []
    assert quarantined_keys(client, bucket) == corpus.blocked
    repeated = total - len(corpus.objects)
    assert 0 <= repeated <= 40 + 20  # at most what followed the last checkpoint
    record(
        "backfill_killed",
        objects=len(corpus.objects),
        published_before_kill=before,
        published_total=total,
        republished=repeated,
        lost=len(corpus.objects) - seen["objects"],
    )


def test_enforce_killed_mid_action_acts_once(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(120, blocked=40, corrupt=2, non_images=2)
    quarantine = seed_bucket(s3_server, bucket, corpus, broker, topic_prefix)
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
        PICTGUARD_ENFORCE__GUARD__ENABLED="false",
        PICTGUARD_METRICS__PORT="0",
    )
    with FaultProxy(s3_server.endpoint) as proxy:
        # Each server-side copy into quarantine answers slowly: actions are in flight
        # whenever the kill comes.
        proxy.add(Fault("slow", method="PUT", path=f"/{bucket}-q/", chunk=16, delay_s=0.05))
        enforce_env = {
            **env,
            "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "enforce"),
            "PICTGUARD_S3__ENDPOINT_URL": proxy.endpoint,
        }
        victim = roles.start("enforce", enforce_env)
        roles.start("classify", {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "c")})
        backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)

        def quarantined() -> int:
            return sum(1 for o in destructive_outcomes(tmp_path / "enforce").values() if o)

        def moves_in_flight() -> set[str]:
            """Copies into quarantine whose original has not been deleted yet."""
            seen = list(proxy.seen)
            copied = {s.path.split("?")[0] for s in seen if s.method == "PUT"}
            deleted = {s.path.split("?")[0] for s in seen if s.method == "DELETE"}
            into = f"/{bucket}-q/s3/{bucket}/"  # a copy's key names its source bucket
            return {p for p in copied if p.replace(into, f"/{bucket}/") not in deleted}

        # Kill while a move is under way: on a busy machine enforce can sit between
        # actions, waiting for classify, and a kill then would test nothing.
        wait_until(
            lambda: quarantined() >= 5 and bool(moves_in_flight()),
            90,
            "five quarantines and a move in flight",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        in_flight = moves_in_flight()
        done_before = quarantined()
        assert done_before < len(corpus.blocked)  # killed mid-run
        assert in_flight  # with moves between their copy and their delete

        roles.start("enforce", enforce_env)
        wait_for(tmp_path / "enforce", len(corpus.objects))
        wait_until(lambda: quarantined_keys(client, bucket) == corpus.blocked, 60, "every move")
        roles.stop_all()
        copies = [s.path.split("?")[0] for s in proxy.seen if s.method == "PUT"]

    seen = outcomes(tmp_path / "enforce")
    assert seen["objects"] == len(corpus.objects)
    actions = destructive_outcomes(tmp_path / "enforce")
    blocked = {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert acted_once(actions, blocked) == []  # 0 duplicate destructive actions
    assert quarantined_keys(client, bucket) == corpus.blocked
    assert not corpus.blocked & bucket_keys(client, bucket)
    for key in corpus.blocked:  # every quarantined copy is the original, byte for byte
        copy = client.get_object(Bucket=f"{bucket}-q", Key=f"s3/{bucket}/{key}")["Body"].read()
        assert copy == corpus.objects[key]
    record(
        "enforce_killed",
        objects=len(corpus.objects),
        blocked=len(corpus.blocked),
        done_before_kill=done_before,
        moves_in_flight_at_kill=len(in_flight),
        copies_total=len(copies),
        recopied=len(copies) - len(set(copies)),
        done_outcomes=sum(o.count("done") for o in actions.values()),
        found_already_moved=sum(o.count("already_absent+copy") for o in actions.values()),
    )


def sync_verdicts(state_dir: Path) -> int:
    """Distinct sync-lane requests (inline uploads) with a verdict recorded by enforce."""
    path = state_dir / "pictguard.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT COUNT(DISTINCT request_id) FROM verdicts WHERE object_id IS NULL"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def test_api_killed_with_uploads_pending(
    broker: Broker,
    s3_server: S3Server,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    port = free_port()
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(port),
        PICTGUARD_API__CLIENTS=json.dumps([{"id": "pictrs", "cidrs": ["127.0.0.0/8"]}]),
        # Long enough that the kill, not the deadline, ends the waiting uploads.
        PICTGUARD_API__DEADLINE_S="9",
        PICTGUARD_API__REPLICA_ID="api-0",  # as a StatefulSet pod keeps its name
    )
    classify = roles.start("classify", {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "c")})
    roles.start("enforce", {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "enforce")})
    api_env = {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "api")}
    api = roles.start("api", api_env)
    url = f"http://127.0.0.1:{port}/api/v1/scan/pictrs"

    def model_answer(seed: int) -> bool:
        try:
            answer = httpx.post(url, content=image_bytes(seed, "PNG", 48), timeout=10)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.json().get("path") == "model"

    seeds = iter(range(900_000, 901_000))
    wait_until(lambda: model_answer(next(seeds)), 90, "a first real verdict")
    wait_until(lambda: sync_verdicts(tmp_path / "enforce") >= 1, 30, "enforce")
    base = sync_verdicts(tmp_path / "enforce")

    classify.send_signal(signal.SIGSTOP)  # verdicts stop: uploads wait in the API
    sync_topic = f"{topic_prefix}scan-requests.sync"
    published = records_in(broker, sync_topic)
    pending = [image_bytes(700 + i, "PNG", 48) for i in range(8)]
    answers: list[int | str] = []

    def upload(data: bytes) -> None:
        try:
            answers.append(httpx.post(url, content=data, timeout=30).status_code)
        except httpx.HTTPError as exc:
            answers.append(type(exc).__name__)

    threads = [threading.Thread(target=upload, args=(d,)) for d in pending]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: records_in(broker, sync_topic) >= published + len(pending), 20, "all published"
    )
    api.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    classify.send_signal(signal.SIGCONT)

    # pict-rs reads a dropped connection as "reject" (it is fail-closed): nothing got in.
    assert len(answers) == len(pending)
    assert not [a for a in answers if isinstance(a, int) and 200 <= a < 300]
    # Every upload that was waiting still gets its final verdict, exactly one each.
    wait_until(
        lambda: sync_verdicts(tmp_path / "enforce") >= base + len(pending), 60, "their verdicts"
    )
    answered = sync_verdicts(tmp_path / "enforce") - base

    roles.start("api", api_env)  # same replica id: same reply topic, stale replies dropped
    wait_until(lambda: model_answer(next(seeds)), 90, "the restarted API")
    again = [httpx.post(url, content=data, timeout=30) for data in pending]
    assert [a.status_code for a in again] == [200] * len(pending)
    roles.stop_all()
    seen = outcomes(tmp_path / "enforce")
    assert seen["destructive"] == {}  # inline uploads are only reported, never acted on
    record(
        "api_killed",
        pending_at_kill=len(pending),
        client_saw=sorted({str(a) for a in answers}),
        verdicts_after_kill=answered,
        resent_answers=sorted({a.json()["path"] for a in again}),
    )
