"""The admin commands end to end: typer app, real state file, moto S3."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from enforce.admin import EnforceContext
from enforce.cli import register
from pictguard.settings import Settings
from pipeline.bus.memory import MemoryBus
from pipeline.events import Decision, Verdict
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from tests.enforce.helpers import enforce_verdicts, exists, make_settings, verdict_for
from tests.servers import S3Server


def cli_for(settings: Settings) -> typer.Typer:
    """A typer app with the enforce commands, opening real state and stores per command."""

    @asynccontextmanager
    async def context() -> AsyncIterator[EnforceContext]:
        state = SqliteState(settings.storage.state_file)
        await state.start()
        stores = Stores(settings.s3)
        try:
            yield EnforceContext(settings, stores, state, MemoryBus())
        finally:
            await stores.close()
            await state.stop()

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """pictguard (test harness)."""

    register(app, context)
    return app


def scan(settings: Settings, *verdicts: Verdict) -> None:
    """Run the enforce stage over ``verdicts`` as `pictguard serve` would."""

    asyncio.run(enforce_verdicts(settings, *verdicts))


@pytest.fixture
def setup(s3_server: S3Server, bucket: str, tmp_path: Path) -> Any:
    s3: Any = s3_server.client()
    qbucket = f"q-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=qbucket)
    settings = make_settings(
        s3_server,
        tmp_path,
        "t.",
        quarantine=f"s3://{qbucket}/q/",
        guard={"max_destructive_per_minute": 1},
    )
    s3.put_object(Bucket=bucket, Key="one.jpg", Body=b"first image")
    s3.put_object(Bucket=bucket, Key="two.jpg", Body=b"second image")
    first = verdict_for(bucket, "one.jpg", data=b"first image")
    second = verdict_for(bucket, "two.jpg", Decision.FLAG_CSAM, data=b"second image")
    scan(settings, first, second)  # the guard lets one through and holds the other
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_for(settings), list(args), env={"COLUMNS": "250"})

    return invoke, s3, first, second


def test_audit_table_and_json(setup: Any, bucket: str) -> None:
    invoke, _, _first, second = setup
    table = invoke("audit", "--since", "1h")
    assert table.exit_code == 0, table.output
    assert f"s3://{bucket}/one.jpg" in table.output and "held" in table.output
    as_json = invoke("audit", "--json", "--outcome", "held")
    assert as_json.exit_code == 0
    [row] = json.loads(as_json.output)
    assert row["verdict_id"] == second.verdict_id and row["action"] == "quarantine"
    bad = invoke("audit", "--decision", "maybe")
    assert bad.exit_code == 1 and "allowed values are" in bad.output


def test_status_resume_and_restore(setup: Any, bucket: str) -> None:
    invoke, s3, first, _second = setup
    status = invoke("enforce", "status")
    assert status.exit_code == 0, status.output
    assert "TRIPPED" in status.output and "held actions: 1" in status.output
    preview = invoke("enforce", "resume", "--dry-run")
    assert "dry run: would resume" in preview.output
    assert exists(s3, bucket, "two.jpg")
    resumed = invoke("enforce", "resume", "--reason", "checked")
    assert resumed.exit_code == 0, resumed.output
    assert "1 held action(s) released: 1 done" in resumed.output
    assert not exists(s3, bucket, "two.jpg")
    status = json.loads(invoke("enforce", "status", "--json").output)
    assert status["guard"]["tripped"] is False and status["held"] == 0

    restored = invoke("restore", first.verdict_id, "--reason", "false positive")
    assert restored.exit_code == 0, restored.output
    assert "restored: 1 × restore done" in restored.output
    assert s3.get_object(Bucket=bucket, Key="one.jpg")["Body"].read() == b"first image"
    missing = invoke("restore", first.verdict_id)
    assert missing.exit_code == 1 and "nothing in quarantine" in missing.output


def test_allow_and_block(setup: Any, bucket: str) -> None:
    invoke, s3, _first, _ = setup
    no_reason = invoke("allow", f"s3://{bucket}/one.jpg")
    assert no_reason.exit_code == 2  # typer: missing --reason
    allowed = invoke(
        "allow", f"s3://{bucket}/one.jpg", "--reason", "cat picture", "--author", "ana", "--json"
    )
    assert allowed.exit_code == 0, allowed.output
    data = json.loads(allowed.output)
    assert data["entry"]["list"] == "allow" and data["entry"]["author"] == "ana"
    assert [(a["action"], a["outcome"]) for a in data["actions"]] == [("restore", "done")]
    assert exists(s3, bucket, "one.jpg")
    blocked = invoke("block", "ab" * 32, "--reason", "shared list", "--category", "nsfw")
    assert blocked.exit_code == 0, blocked.output
    assert "blocklisted" in blocked.output
    wrong = invoke("block", "ab" * 32, "--reason", "x", "--category", "gore")
    assert wrong.exit_code == 2
