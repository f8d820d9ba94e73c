"""Session fixtures: one real Kafka-protocol broker and one real S3 server for all tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_roles import Roles
from tests.servers import Broker, S3Server, start_broker, start_s3

ROOT = Path(__file__).resolve().parents[1]
# Modules whose commands start roles on their default ports (9101-9103): under pytest-xdist
# they share one group, so two of them never run at once on different workers.
DEFAULT_PORT_MODULES = frozenset(
    {"tests/journeys/test_errors.py", "tests/pipeline/test_cli_errors.py"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs two workers (``-n 2 --dist loadgroup``): a module's tests stay on
    one worker, so its module fixtures start once; see DEFAULT_PORT_MODULES."""
    for item in items:
        module = item.path.relative_to(ROOT).as_posix()
        group = "default-ports" if module in DEFAULT_PORT_MODULES else module
        item.add_marker(pytest.mark.xdist_group(group))


# Tests must never read an admin's real configuration.
for _name in list(os.environ):
    if _name.startswith("PICTGUARD_"):
        del os.environ[_name]


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = start_broker()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    s = start_s3()
    yield s
    s.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    client: Any = s3_server.client()
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test's own, so tests sharing the broker never see each other."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    """Role processes (``pictguard run ROLE``) that never outlive the test."""
    r = Roles(tmp_path)
    yield r
    r.stop_all()
