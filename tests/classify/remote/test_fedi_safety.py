"""An existing fedi-safety worker classifies uploads for `pictguard serve`, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.classify.remote import media
from tests.classify.remote.fedi_safety_stub import FediSafetyStub
from tests.classify.remote.processes import Processes
from tests.servers import free_port, wait_until

KEY = "fedi-safety-apikey-0123456789abcdef"
SCRIPT_TOKEN = "script-token-0123456789abcdef"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def serve_config(tmp: Path, port: int) -> dict[str, Any]:
    return {
        "storage": {"state_dir": str(tmp / "state")},
        "metrics": {"port": 0},
        # The instance runs no model: only hash lists, and the worker at home.
        "classify": {
            "classifiers": ["hashlist"],
            "remote": {
                "enabled": True,
                "workers": [{"id": "home-gpu", "token": KEY, "protocol": "fedi-safety"}],
                "lease_s": 10,
            },
        },
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "deadline_s": 9,  # a busy test machine must not turn a verdict into a timeout
            "on_timeout": "reject",
            "clients": [
                {"id": "pictrs", "cidrs": ["127.0.0.0/8"]},
                {"id": "script", "token": SCRIPT_TOKEN},
            ],
        },
    }


def test_a_fedi_safety_worker_classifies_uploads_through_serve(
    tmp_path: Path, procs: Processes
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start("serve", ["serve"], serve_config(tmp_path, port))

    def readyz() -> httpx.Response | None:
        try:
            return httpx.get(f"{url}/readyz", timeout=2)
        except httpx.HTTPError:
            return None

    wait_until(lambda: readyz() is not None or not procs.alive(), 90, "the API to listen")
    assert procs.alive(), procs.logs()
    waiting = readyz()
    assert waiting is not None and waiting.status_code == 503
    assert "no remote worker connected" in waiting.json()["message"]

    stub = FediSafetyStub(url, KEY).start()
    try:
        wait_until(lambda: (r := readyz()) is not None and r.status_code == 200, 30, "ready")
        clean = [media.clean(i) for i in range(6)]
        flagged = [media.washed(100 + i, media.MAGENTA) for i in range(2)]
        statuses = [
            httpx.post(
                f"{url}/api/v1/scan/pictrs",
                content=data,
                headers={"Content-Type": "image/jpeg"},
                timeout=30,
            ).status_code
            for data in [*clean, *flagged]
        ]
        checked = httpx.post(
            f"{url}/api/v1/check",
            params={"client_id": "script", "token": SCRIPT_TOKEN},
            content=media.washed(200, media.MAGENTA),
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        ).json()
        # The same bytes again: answered from the verdict cache, no worker needed.
        again = httpx.post(
            f"{url}/api/v1/check",
            params={"client_id": "script", "token": SCRIPT_TOKEN},
            content=clean[0],
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        ).json()
    finally:
        stub.stop()

    assert statuses == [200] * len(clean) + [406] * len(flagged), procs.logs()
    assert checked["decision"] == "flag_csam" and checked["path"] == "model"
    assert checked["model_version"] == "fedi-safety:home-gpu"
    assert checked["worker"] == "home-gpu"
    assert again["decision"] == "allow" and again["path"] == "fast"
    assert again["cached"] is True
    # Every answer the worker sent was taken, each exactly once.
    assert stub.errors == []
    assert len(stub.submitted) == len(clean) + len(flagged) + 1
    assert {status for _, _, status in stub.submitted} == {201}
    assert sorted(is_csam for _, is_csam, _ in stub.submitted) == [False] * 6 + [True] * 3
