"""What enforce recorded, read from its SQLite state, for the reliability checks."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path


def destructive_outcomes(state_dir: Path) -> dict[str, list[str]]:
    """Per object, the outcomes of its delete/quarantine actions in recording order.

    ``already_absent+copy`` is a quarantine found already done (the object gone, its copy
    in quarantine): what a retry after a crash or an outage between the move and its
    record finds.
    """
    path = state_dir / "pictguard.sqlite3"
    if not path.exists():
        return {}  # enforce has not opened its state yet
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT object_id, outcome, body FROM actions WHERE action IN ('delete', "
            "'quarantine') ORDER BY created_at"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return {}  # the state file is open, enforce's records not created yet
    finally:
        conn.close()
    found: dict[str, list[str]] = defaultdict(list)
    for object_id, outcome, body in rows:
        if outcome == "already_absent" and json.loads(body).get("quarantine"):
            outcome = "already_absent+copy"
        found[object_id].append(outcome)
    return dict(found)


def acted_once(outcomes: dict[str, list[str]], expected: set[str]) -> list[str]:
    """Objects of ``expected`` not acted on exactly once, and objects acted on unexpectedly.

    Exactly once: one ``done``, or no ``done`` and the move found already done by a retry.
    """
    wrong = []
    for object_id in sorted(expected | set(outcomes)):
        seen = outcomes.get(object_id, [])
        done = seen.count("done")
        ok = object_id in expected and (done == 1 or (done == 0 and "already_absent+copy" in seen))
        if not ok:
            wrong.append(f"{object_id}: {seen}")
    return wrong


def record(test: str, **numbers: object) -> None:
    """Append what a test measured to ``$RELIABILITY_LOG`` (JSON lines), if set.

    docs/RELIABILITY.md quotes these figures; the tests' assertions do not depend on them.
    """
    import os

    target = os.environ.get("RELIABILITY_LOG")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"test": test, **numbers}) + "\n")
