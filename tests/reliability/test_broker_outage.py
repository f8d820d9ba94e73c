"""The broker unreachable at start and gone mid-run: roles wait and retry, nothing is lost.

Tansu keeps its data in memory, so "down mid-run, then back" is a paused broker process
(SIGSTOP/SIGCONT): connections stay open and every request times out, as with a broker
behind a network partition. Failing fast without ``kafka.wait_for_broker_s`` is checked in
tests/pipeline/test_cli_errors.py; the API's answer while the broker is gone for good in
tests/validate_api/test_api.py::test_reject_policy_when_the_broker_is_gone.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from pipeline.samples import image_bytes
from tests.corpus import make_corpus
from tests.kafka_roles import (
    PICTGUARD,
    Roles,
    backfill,
    block_on_kafka,
    outcomes,
    quarantined_keys,
    role_env,
    seed_bucket,
    wait_for,
)
from tests.reliability.audit import acted_once, destructive_outcomes, record
from tests.servers import Broker, S3Server, bucket_keys, free_port, start_broker, wait_until

WAITING = re.compile(r"waiting for Kafka at (\S+) to start the (.+?) \(attempt (\d+): ")


def logs(roles: Roles) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted(roles.tmp.glob("*.log"))}


def test_roles_started_before_the_broker_wait_for_it(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    roles: Roles,
) -> None:
    client: Any = s3_server.client()
    corpus = make_corpus(40, blocked=4, corrupt=1, non_images=1)
    quarantine = seed_bucket(s3_server, bucket, corpus)
    port = free_port()
    env = role_env(
        broker,
        s3_server,
        topic_prefix,
        tmp_path / "state",
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",  # nothing listens yet
        PICTGUARD_KAFKA__WAIT_FOR_BROKER_S="120",
        PICTGUARD_KAFKA__CONNECT_TIMEOUT_S="1",
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
    )
    for role in ("classify", "enforce"):
        roles.start(role, {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / role)})
    # Both roles keep trying, one log line per attempt, and neither exits.
    wait_until(
        lambda: all(len(WAITING.findall(text)) >= 2 for text in logs(roles).values()),
        60,
        "two logged attempts per role",
        every=0.2,
    )
    assert all(p.poll() is None for p in roles.procs)

    late = start_broker(port)
    try:
        asyncio.run(block_on_kafka(late, topic_prefix, corpus))
        backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)
        wait_for(tmp_path / "enforce", len(corpus.objects), timeout=120)
    finally:
        roles.stop_all()  # SIGTERM: the batch in hand is finished and recorded first
        late.stop()
    seen = outcomes(tmp_path / "enforce")

    assert seen["objects"] == len(corpus.objects)
    assert set(seen["destructive"]) == {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert set(seen["destructive"].values()) == {1}
    assert quarantined_keys(client, bucket) == corpus.blocked
    for name, text in logs(roles).items():
        attempts = [(m[0], m[1], int(m[2])) for m in WAITING.findall(text)]
        assert attempts, name
        assert {a[0] for a in attempts} == {f"127.0.0.1:{port}"}
        producer = [n for _, what, n in attempts if what == "producer"]
        assert producer == list(range(1, len(producer) + 1)), name  # each attempt once
        assert "kafka.wait_for_broker_s" in text


def test_waiting_ends_with_one_clear_error(broker: Broker, tmp_path: Path) -> None:
    env = role_env(
        broker,
        S3Server(free_port(), None),
        "w.",
        tmp_path,
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        PICTGUARD_KAFKA__WAIT_FOR_BROKER_S="3",
        PICTGUARD_KAFKA__CONNECT_TIMEOUT_S="1",
        PICTGUARD_METRICS__PORT="0",
    )
    started = time.monotonic()
    done = subprocess.run(
        [*PICTGUARD, "run", "enforce"], env=env, capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot reach Kafka at 127.0.0.1:")
    assert "PICTGUARD_KAFKA__BOOTSTRAP_SERVERS" in lines[-1]
    assert len(WAITING.findall(done.stderr)) >= 2
    assert "Traceback" not in done.stderr
    assert elapsed >= 3  # it did wait for kafka.wait_for_broker_s


def test_broker_paused_mid_run_roles_ride_it_out(
    s3_server: S3Server, bucket: str, tmp_path: Path, roles: Roles
) -> None:
    own = start_broker()  # paused below: not the session's broker
    client: Any = s3_server.client()
    corpus = make_corpus(120, blocked=8, corrupt=2, non_images=2)
    prefix = "pause."
    quarantine = seed_bucket(s3_server, bucket, corpus, own, prefix)
    api_port = free_port()
    env = role_env(
        own,
        s3_server,
        prefix,
        tmp_path / "state",
        PICTGUARD_ENFORCE__QUARANTINE=quarantine,
        # Model time per image, so the pause lands mid-stream.
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist", "nudenet"]',
        PICTGUARD_CLASSIFY__FETCH_BATCH="8",
        # Requests to a silent broker time out after 21 s instead of 40.
        PICTGUARD_KAFKA__CONNECT_TIMEOUT_S="1",
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(api_port),
        PICTGUARD_API__CLIENTS='[{"id": "pictrs", "cidrs": ["127.0.0.0/8"]}]',
        PICTGUARD_API__DEADLINE_S="1",
        PICTGUARD_API__ON_TIMEOUT="reject",
        PICTGUARD_API__REPLICA_ID="paused",
    )
    try:
        for role in ("classify", "enforce", "api"):
            roles.start(role, {**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / role)})
        api = f"http://127.0.0.1:{api_port}/api/v1/scan/pictrs"
        wait_until(lambda: _status(api, image_bytes(1, "PNG", 32)) == 200, 90, "the API", every=0.2)
        backfill({**env, "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path / "backfill")}, bucket)
        wait_for(tmp_path / "enforce", 16)

        own.process.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        before = outcomes(tmp_path / "enforce")["objects"]
        time.sleep(2)
        # While the broker is gone the API answers by its deadline, per api.on_timeout.
        started = time.monotonic()
        status = _status(api, image_bytes(2, "PNG", 32))
        answered_in = time.monotonic() - started
        assert status == 503 and answered_in < 1.0 + 0.5
        time.sleep(max(0.0, 25 - (time.monotonic() - paused)))  # past every request timeout
        assert all(p.poll() is None for p in roles.procs)  # nobody gave up
        own.process.send_signal(signal.SIGCONT)

        wait_for(tmp_path / "enforce", len(corpus.objects), timeout=180)
        assert before < len(corpus.objects)  # the pause really was mid-stream
        wait_until(
            lambda: _status(api, image_bytes(3, "PNG", 32)) == 200, 60, "the API back", every=0.2
        )
        assert all(p.poll() is None for p in roles.procs)
    finally:
        own.process.send_signal(signal.SIGCONT)
        roles.stop_all()
        own.stop()
    seen = outcomes(tmp_path / "enforce")
    assert seen["objects"] == len(corpus.objects)
    blocked = {f"s3://{bucket}/{k}" for k in corpus.blocked}
    assert acted_once(destructive_outcomes(tmp_path / "enforce"), blocked) == []
    assert quarantined_keys(client, bucket) == corpus.blocked
    assert not corpus.blocked & bucket_keys(client, bucket)
    text = "\n".join(logs(roles).values())
    assert "Traceback" not in text
    retries = text.count("handling them again")
    assert retries >= 1  # a produce did time out during the pause and was retried
    record(
        "broker_paused",
        objects=len(corpus.objects),
        verdicts_before_pause=before,
        pause_s=25,
        api_status_during_pause=status,
        api_answer_s=round(answered_in, 3),
        batch_retries_logged=retries,
        commit_failures_logged=text.count("failed, continuing"),
        lost=len(corpus.objects) - seen["objects"],
    )


def _status(url: str, data: bytes) -> int:
    try:
        return httpx.post(url, content=data, timeout=10).status_code
    except httpx.HTTPError:
        return 0
