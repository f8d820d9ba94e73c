"""Command-line conventions: quick help, exit statuses, version, completion, readable keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from pictguard.cli import ROLE_COMMANDS, ExitStatus, RootGroup, command, scan_exit_status, shorten
from pictguard.scan import ScanSummary
from pipeline.events import Decision

# What `pictguard --help` must not import: each costs from a tenth of a second to many.
HEAVY = ("torch", "onnxruntime", "faiss", "aiobotocore", "botocore", "fastapi", "numpy")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "pictguard", *args],
        env={**env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, runpy; sys.argv = ['pictguard', '--help']\n"
        "try:\n    runpy.run_module('pictguard', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
    assert "scan" in done.stdout and "hashes" in done.stdout


def test_help_shows_no_bool_types() -> None:
    for args in (["--help"], ["scan", "--help"], ["hashes", "add", "--help"], ["audit", "--help"]):
        shown = run(*args)
        assert shown.returncode == 0, shown.stderr
        assert "<bool>" not in shown.stdout, (args, shown.stdout)


def test_the_help_of_role_commands_is_their_own() -> None:
    root = command()
    own = set(root.commands)
    listed = {name: root.get_command(None, name).help for name in ROLE_COMMANDS}
    root.load_role_commands()
    # Every command a role registers is listed (a missing one would be "No such command").
    assert set(root.commands) - own == set(ROLE_COMMANDS)
    loaded = {name: root.commands[name] for name in ROLE_COMMANDS}
    for name, cmd in loaded.items():
        own = (cmd.help or "").strip().splitlines()[0]
        assert listed[name] == own, name
    assert isinstance(root, RootGroup)


def test_version_and_completion() -> None:
    from pictguard import __version__

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"pictguard {__version__}"
    completion = run("--show-completion", "bash")
    assert completion.returncode == 0, completion.stderr
    assert "_PICTGUARD_COMPLETE" in completion.stdout


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("photo.jpg", 20, "photo.jpg"),
        (
            "2024/06/instance/users/alice/photo-4000x3000.jpg",
            30,
            "2024/06/i…/photo-4000x3000.jpg",
        ),
        ("ab/cd/ef/01/23/45/67/89/ab/cd/0123456789ab.png", 24, "ab/cd/…/0123456789ab.png"),
        ("a/an-extremely-long-file-name-that-will-not-fit.png", 20, "…at-will-not-fit.png"),
    ],
)
def test_long_keys_keep_their_file_name(text: str, width: int, expected: str) -> None:
    shortened = shorten(text, width)
    assert shortened == expected
    assert len(shortened) <= width


def summary(**fields: object) -> ScanSummary:
    s = ScanSummary(target="/srv/media", completed=True)
    for name, value in fields.items():
        setattr(s, name, value)
    return s


def test_scan_exit_statuses() -> None:
    assert scan_exit_status(summary(decisions=Counter({Decision.ALLOW: 3}))) is ExitStatus.OK
    errors = Counter({Decision.ALLOW: 3, Decision.ERROR: 2})
    assert scan_exit_status(summary(decisions=errors)) is ExitStatus.OK
    flagged = Counter({Decision.ALLOW: 3, Decision.FLAG_NSFW: 1})
    assert scan_exit_status(summary(decisions=flagged)) is ExitStatus.FLAGGED
    held = summary(decisions=flagged, actions=Counter({"quarantine:held": 2}), held=2)
    assert scan_exit_status(held) is ExitStatus.GUARD_HELD
    tripped = summary(decisions=flagged, guard_trip="more than 20 deletes in 60 s")
    assert scan_exit_status(tripped) is ExitStatus.GUARD_HELD
    stopped = summary(decisions=flagged, completed=False, interrupted=True)
    assert scan_exit_status(stopped) is ExitStatus.INTERRUPTED
    # The filters skipped everything listed: nothing was scanned, the admin must look.
    preset = Counter({"remote media (mastodon_media=local)": 3})
    assert scan_exit_status(summary(listed=3, skipped=preset)) is ExitStatus.ADMIN_ERROR
    assert scan_exit_status(summary(listed=0)) is ExitStatus.OK  # an empty folder
    # Older than ingest.backfill.since: a repeated scan that found nothing new is fine.
    old = Counter({"older than ingest.backfill.since": 2, **preset})
    assert scan_exit_status(summary(listed=5, skipped=old, too_old=2)) is ExitStatus.OK
    resumed = summary(listed=3, skipped=preset, resumed_after="media_attachments/x.png")
    assert scan_exit_status(resumed) is ExitStatus.OK
    # The unexpected-error status no longer collides with "flagged" (1) or "held" (3).
    assert len({int(s) for s in ExitStatus}) == len(ExitStatus)
    assert ExitStatus.UNEXPECTED not in (1, 2, 3)
