"""The audit trail's look-ups stay index-bound as it grows (enforce asks one per verdict)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from enforce.records import Records
from pipeline.events import ActionOutcome, ActionType, Decision, EnforcementAction, Verdict
from pipeline.state.sqlite import SqliteState


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[Records]:
    state = SqliteState(tmp_path / "state.sqlite3")
    r = Records(state)
    await r.start()
    yield r
    await state.stop()


async def add_inline_uploads(records: Records, count: int) -> Verdict:
    """``count`` reported inline uploads (no object: what the validate API sends); the last."""
    verdict = Verdict(request_id="r", decision=Decision.ALLOW)
    for i in range(count):
        verdict = Verdict(request_id=f"r{i}", decision=Decision.ALLOW, sha256=f"{i:064x}")
        await records.record_verdict(verdict)
        await records.record_action(
            EnforcementAction(
                verdict_id=verdict.verdict_id,
                decision=verdict.decision,
                action=ActionType.REPORT,
                outcome=ActionOutcome.DONE,
            )
        )
    return verdict


def vm_steps(records: Records) -> list[int]:
    """Counts SQLite VM steps (in units of 50 opcodes) run on the state's reading connection."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    reader = records.state._reader
    assert isinstance(reader, sqlite3.Connection)
    reader.set_progress_handler(tick, 50)
    return steps


async def test_replayed_inline_upload_is_found_without_scanning_the_trail(
    records: Records,
) -> None:
    """A replay (same request id, fresh verdict id) is found through its request id.

    The work per look-up must not grow with the number of earlier inline uploads: with a
    plain JOIN SQLite walked every inline action ("object_id IS NULL") for each verdict.
    """
    small = await add_inline_uploads(records, 10)
    steps = vm_steps(records)
    replay = Verdict(request_id=small.request_id, decision=Decision.ALLOW, sha256=small.sha256)
    found = await records.prior_action(replay, ActionType.REPORT, dry_run=False)
    assert found is not None and found.verdict_id == small.verdict_id
    few = steps[0]

    large = await add_inline_uploads(records, 600)
    steps[0] = 0
    replay = Verdict(request_id=large.request_id, decision=Decision.ALLOW, sha256=large.sha256)
    found = await records.prior_action(replay, ActionType.REPORT, dry_run=False)
    assert found is not None and found.verdict_id == large.verdict_id
    assert steps[0] <= few + 5, f"{steps[0]} VM step units with 610 uploads vs {few} with 10"

    unseen = Verdict(request_id="never-seen", decision=Decision.ALLOW)
    steps[0] = 0
    assert await records.prior_action(unseen, ActionType.REPORT, dry_run=False) is None
    assert steps[0] <= few + 5
