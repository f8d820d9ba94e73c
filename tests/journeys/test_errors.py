"""What an admin sees when something is wrong: one line that says what to fix, exit status 2,
no traceback; and roles that share a host."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest

from tests.journeys.helpers import Admin, Result, port, wait_ready
from tests.servers import FAST_GROUPS, Broker, S3Server


def one_line(result: Result, *words: str) -> str:
    """The single error line; exit status 2 (the admin must fix something), no traceback."""
    assert result.returncode == 2, result
    lines = result.error_lines()
    assert len(lines) == 1, result
    assert lines[0].startswith("error: "), result
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_a_wrong_setting(tmp_path: Path) -> None:
    admin = Admin.at(tmp_path)
    nuke = admin.run("scan", str(tmp_path), PICTGUARD_ENFORCE__ON_FLAG_CSAM="nuke")
    one_line(nuke, "PICTGUARD_ENFORCE__ON_FLAG_CSAM", "'report', 'delete' or 'quarantine'")
    # Was "unexpected ValueError: Invalid endpoint", exit status 1 (the "flagged" status).
    url = admin.run("scan", "s3://pictrs", PICTGUARD_S3__ENDPOINT_URL="notaurl")
    one_line(url, "PICTGUARD_S3__ENDPOINT_URL", "'notaurl'", "http://")


def test_a_missing_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    admin = Admin.at(
        tmp_path,
        PICTGUARD_S3__ENDPOINT_URL=s3_server.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID="testing",
        PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
    )
    result = admin.run("scan", "s3://no-such-bucket")
    one_line(result, "no-such-bucket", "not found", "PICTGUARD_S3__ENDPOINT_URL")


def test_a_broker_that_is_down(tmp_path: Path) -> None:
    admin = Admin.at(tmp_path, PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port()}")
    result = admin.run("run", "classify")
    one_line(result, "cannot reach Kafka", "PICTGUARD_KAFKA__BOOTSTRAP_SERVERS")


def test_a_missing_optional_package_says_what_to_install(tmp_path: Path) -> None:
    # An install without the [clip] extra: open_clip cannot be imported.
    shadow = tmp_path / "site"
    (shadow / "open_clip").mkdir(parents=True)
    (shadow / "open_clip" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'open_clip'\", name='open_clip')\n"
    )
    admin = Admin.at(tmp_path, PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist,clip")
    root = Path(__file__).resolve().parents[2]
    result = admin.run("models", "--download", PYTHONPATH=f"{shadow}:{root}")
    # Was a traceback; and rich's markup swallowed "[clip]" from the advice.
    one_line(result, "open_clip", "pip install 'pictguard[clip]'")


def test_a_role_whose_health_port_is_taken_does_not_run_blind(
    tmp_path: Path, broker: Broker
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        admin = Admin.at(
            tmp_path,
            PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
            PICTGUARD_KAFKA__TOPIC_PREFIX=f"j{uuid.uuid4().hex[:8]}.",
            PICTGUARD_METRICS__HOST="127.0.0.1",
            PICTGUARD_METRICS__PORT=str(busy),
        )
        result = admin.run("run", "enforce")
    one_line(result, f"127.0.0.1:{busy}", "/healthz", "PICTGUARD_METRICS__PORT")


def test_roles_on_one_host_each_have_their_own_health_port(tmp_path: Path, broker: Broker) -> None:
    defaults = {"classify": 9102, "enforce": 9103}
    for number in defaults.values():
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", number)) == 0:
                pytest.skip(f"port {number} is in use on this machine")
    admin = Admin.at(
        tmp_path,
        PICTGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        PICTGUARD_KAFKA__TOPIC_PREFIX=f"j{uuid.uuid4().hex[:8]}.",
        PICTGUARD_KAFKA__PARTITIONS="1",
        PICTGUARD_METRICS__HOST="127.0.0.1",
        PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist",
        PICTGUARD_KAFKA__CONSUMER_OVERRIDES=json.dumps(FAST_GROUPS),
    )
    # Started as the README shows them, with nothing set for the ports.
    procs = {role: admin.start("run", role, log=f"{role}.log") for role in defaults}
    try:
        for role, number in defaults.items():
            wait_ready(
                f"http://127.0.0.1:{number}", procs[role], lambda r=role: admin.log(f"{r}.log")
            )
    finally:
        admin.stop_all()
    for role, proc in procs.items():
        assert proc.returncode == 0, admin.log(f"{role}.log")
        assert "Address already in use" not in admin.log(f"{role}.log")
