"""In distributed mode the admin API acts through the enforce role: one guard, one audit.

Before this fix ``pictguard run api`` ran ``/admin/block`` (allow, restore, resume…) on
its own state: its own guard (which had seen none of enforce's actions, so a tripped or
nearly tripped guard did not hold an admin's delete), its own held actions and its own
audit, which ``pictguard audit`` against enforce never showed. Now the API sends each
admin request over Kafka (``admin-requests``) and enforce answers on the replica's
``admin-replies.<id>`` topic. Two real processes, ``run enforce`` and ``run api``, on the
real broker (Tansu) and S3 server (moto).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.bus.kafka import KafkaBus
from pipeline.events import Decision, ObjectRef, Source, StoreKind, Verdict, encode
from pipeline.samples import image_bytes
from pipeline.topics import VERDICTS
from tests.servers import Broker, S3Server, free_port, poll_ready, wait_until

ADMIN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class Processes:
    """Role processes that never outlive the test; their logs for the failure message."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, env: dict[str, str]) -> None:
        log = (self.tmp / f"{role}.log").open("wb")
        self.procs[role] = subprocess.Popen(
            [sys.executable, "-m", "pictguard.cli", "run", role],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {role} ---\n{(self.tmp / f'{role}.log').read_text(errors='replace')[-3000:]}"
            for role in self.procs
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop()


def actions(state_dir: Path) -> list[dict[str, Any]]:
    """The actions a role recorded in its own state file (none if it has none)."""
    path = state_dir / "pictguard.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT body FROM actions ORDER BY created_at").fetchall()
    except sqlite3.OperationalError:  # the table is not there: nothing recorded
        return []
    finally:
        conn.close()
    return [json.loads(body) for (body,) in rows]


async def publish_verdict(broker: Broker, prefix: str, ref: ObjectRef, sha256: str) -> None:
    bus = KafkaBus(broker.settings(topic_prefix=prefix, partitions=1))
    await bus.start()
    try:
        verdict = Verdict(
            request_id="r" * 32,
            source=Source.EVENT,
            object=ref,
            decision=Decision.FLAG_CSAM,
            sha256=sha256,
            matched="blocklist:test",
            classifiers=["hashlist"],
        )
        await bus.produce(f"{prefix}{VERDICTS}", encode(verdict), verdict.key.encode())
    finally:
        await bus.stop()


def test_admin_block_through_the_api_is_enforces_and_meets_its_guard(
    broker: Broker,
    s3_server: S3Server,
    bucket: str,
    topic_prefix: str,
    tmp_path: Path,
    processes: Processes,
) -> None:
    import hashlib

    client: Any = s3_server.client()
    client.create_bucket(Bucket=f"{bucket}-q")
    first, second = image_bytes(11, "PNG", 64), image_bytes(12, "PNG", 64)
    client.put_object(Bucket=bucket, Key="media/first.png", Body=first)
    client.put_object(Bucket=bucket, Key="media/second.png", Body=second)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=topic_prefix,
        PICTGUARD_KAFKA__PARTITIONS="1",
        PICTGUARD_KAFKA__GROUP_PREFIX=f"{topic_prefix}g-",
        PICTGUARD_S3__ENDPOINT_URL=s3_server.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID="testing",
        PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist"]',
        PICTGUARD_METRICS__PORT="0",
        PICTGUARD_ENFORCE__ADMIN_TOKEN=ADMIN,
        PICTGUARD_ENFORCE__QUARANTINE=f"s3://{bucket}-q/",
        # One delete or quarantine a minute: enforce's second one trips its guard.
        PICTGUARD_ENFORCE__GUARD__MAX_DESTRUCTIVE_PER_MINUTE="1",
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(port),
        PICTGUARD_API__CLIENTS='[{"id": "pictrs", "cidrs": ["127.0.0.0/8"]}]',
        PICTGUARD_API__DEADLINE_S="3",
        PYTHONUNBUFFERED="1",
    )
    enforce_state, api_state = tmp_path / "enforce", tmp_path / "api"
    processes.start("enforce", {**env, "PICTGUARD_STORAGE__STATE_DIR": str(enforce_state)})
    processes.start("api", {**env, "PICTGUARD_STORAGE__STATE_DIR": str(api_state)})
    url = f"http://127.0.0.1:{port}"
    api = processes.procs["api"]
    assert poll_ready(url, lambda: api.poll() is None), processes.logs()

    # Enforce quarantines one object from the verdict stream: its guard has now counted one.
    ref = ObjectRef(store=StoreKind.S3, bucket=bucket, key="media/first.png")
    asyncio.run(publish_verdict(broker, topic_prefix, ref, hashlib.sha256(first).hexdigest()))
    wait_until(
        lambda: any(a["outcome"] == "done" for a in actions(enforce_state)),
        60,
        "enforce to quarantine the first object",
    )

    with httpx.Client(base_url=url, headers=AUTH, timeout=90) as http:
        # The admin's block: enforce's guard holds it (the API's own would have let it by).
        blocked = http.post(
            "/admin/block",
            json={"target": f"s3://{bucket}/media/second.png", "reason": "reported"},
        )
        assert blocked.status_code == 200, (blocked.text, processes.logs())
        [held] = blocked.json()["actions"]
        assert held["outcome"] == "held", blocked.json()
        status = http.get("/admin/enforce/status").json()
        assert status["guard"]["tripped"] is True and status["held"] == 1
        audit = http.get("/admin/audit").json()
        assert {(a["object"]["key"], a["outcome"]) for a in audit} >= {
            ("media/first.png", "done"),
            ("media/second.png", "held"),
        }
        # What the API answered is enforce's own record, and the API keeps none.
        recorded = {(a["object"]["key"], a["outcome"]) for a in actions(enforce_state)}
        assert ("media/second.png", "held") in recorded
        assert actions(api_state) == []

        # Resuming through the API releases enforce's held action.
        resumed = http.post("/admin/enforce/resume", json={"reason": "reviewed"})
        assert resumed.status_code == 200, resumed.text
        assert [a["outcome"] for a in resumed.json()["actions"]] == ["done"]
        assert http.get("/admin/enforce/status").json()["guard"]["tripped"] is False
    quarantined = client.list_objects_v2(Bucket=f"{bucket}-q").get("Contents", [])
    assert sorted(o["Key"].rsplit("/", 1)[-1] for o in quarantined) == ["first.png", "second.png"]


def test_admin_api_says_so_when_enforce_is_not_running(
    broker: Broker, topic_prefix: str, tmp_path: Path, processes: Processes
) -> None:
    """No enforce role on the bus: a clear 503 by the deadline, not a local action."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=topic_prefix,
        PICTGUARD_KAFKA__PARTITIONS="1",
        PICTGUARD_KAFKA__GROUP_PREFIX=f"{topic_prefix}g-",
        PICTGUARD_CLASSIFY__CLASSIFIERS='["hashlist"]',
        PICTGUARD_STORAGE__STATE_DIR=str(tmp_path / "api"),
        PICTGUARD_ENFORCE__ADMIN_TOKEN=ADMIN,
        PICTGUARD_ENFORCE__ADMIN_TIMEOUT_S="2",
        PICTGUARD_API__HOST="127.0.0.1",
        PICTGUARD_API__PORT=str(port),
        PICTGUARD_API__CLIENTS='[{"id": "pictrs", "cidrs": ["127.0.0.0/8"]}]',
        PICTGUARD_API__DEADLINE_S="3",
    )
    processes.start("api", env)
    url = f"http://127.0.0.1:{port}"
    api = processes.procs["api"]
    assert poll_ready(url, lambda: api.poll() is None), processes.logs()
    answer = httpx.get(f"{url}/admin/enforce/status", headers=AUTH, timeout=30)
    assert answer.status_code == 503, answer.text
    assert "pictguard run enforce" in answer.json()["detail"]
