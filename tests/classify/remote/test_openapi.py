"""schemathesis against the worker API of a running `pictguard serve`, with valid worker
tokens, so the bodies are parsed: whatever a worker sends, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.classify.remote.processes import Processes
from tests.servers import free_port, wait_until

PICTGUARD_TOKEN = "pictguard-worker-token-0123456789"
FEDI_KEY = "fedi-safety-worker-key-0123456789"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    procs = Processes(tmp_path)
    port = free_port()
    config = {
        "storage": {"state_dir": str(tmp_path / "state")},
        "metrics": {"port": 0},
        "classify": {
            "classifiers": ["hashlist"],
            "remote": {
                "enabled": True,
                "long_poll_s": 0,  # a fuzzed wait_s must not make each call wait
                "rate_per_s": 10_000,
                "burst": 10_000,
                "workers": [
                    {"id": "gpu", "token": PICTGUARD_TOKEN},
                    {"id": "fedi", "token": FEDI_KEY, "protocol": "fedi-safety"},
                ],
            },
        },
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "clients": [{"id": "c", "cidrs": ["127.0.0.0/8"]}],
        },
    }
    procs.start("serve", ["serve"], config)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return not procs.alive()

    wait_until(up, 90, "serve")
    assert procs.alive(), procs.logs()
    yield url
    procs.stop_all()


def test_no_server_errors_from_the_worker_api(served: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
        if op.path.startswith(("/api/v1/workers", "/api/v1/pop"))
    ]
    assert {op.path for op in operations} == {
        "/api/v1/workers/lease",
        "/api/v1/workers/leases/{lease}/content",
        "/api/v1/workers/verdicts",
        "/api/v1/pop",
    }
    seen: list[int] = []
    headers = {"Authorization": f"Bearer {PICTGUARD_TOKEN}", "apikey": FEDI_KEY}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=served, timeout=30, headers=headers)
            seen.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            )

        call()
    assert 200 in seen  # the bodies got through authentication and were parsed
