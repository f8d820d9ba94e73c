"""An empty or short secret closes what it guards and stops start-up; it never opens it.

Before this fix ``PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN=""`` turned the MinIO endpoint on
with an empty token that any ``Authorization: Basic …`` header matched, and a scan client
with ``"token": ""`` was authorised from any address.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ingest.webhook import create_webhook_app
from pictguard.settings import load_settings
from pipeline.bus.memory import MemoryBus
from pipeline.settings import SettingsError
from validate_api.auth import Unauthorized, authorise

SHORT = "change-me"  # the placeholder the shipped docker/env.example had
LONG = "0123456789abcdef0123"

# (setting as the admin sees it, the environment variable, overrides for load_settings)
GUARDED: list[tuple[str, str, dict[str, Any]]] = [
    ("enforce.admin_token", "PICTGUARD_ENFORCE__ADMIN_TOKEN", {"enforce": {"admin_token": SHORT}}),
    (
        "ingest.webhook.minio_token",
        "PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN",
        {"ingest": {"webhook": {"minio_token": SHORT}}},
    ),
    (
        "ingest.webhook.ceph_token",
        "PICTGUARD_INGEST__WEBHOOK__CEPH_TOKEN",
        {"ingest": {"webhook": {"ceph_token": SHORT}}},
    ),
    (
        "ingest.webhook.b2_secret",
        "PICTGUARD_INGEST__WEBHOOK__B2_SECRET",
        {"ingest": {"webhook": {"b2_secret": SHORT}}},
    ),
    (
        "api.clients.0.token",
        "PICTGUARD_API__CLIENTS",
        {"api": {"clients": [{"id": "script", "token": SHORT}]}},
    ),
    (
        "enforce.notify.channels.0.webhook.secret",
        "PICTGUARD_ENFORCE__NOTIFY__CHANNELS",
        {
            "enforce": {
                "notify": {"channels": [{"type": "webhook", "url": "http://x", "secret": SHORT}]}
            }
        },
    ),
]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}


@pytest.mark.parametrize(("setting", "variable", "overrides"), GUARDED, ids=[g[0] for g in GUARDED])
def test_short_secret_is_refused_naming_the_setting(
    setting: str, variable: str, overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PICTGUARD_"):
            monkeypatch.delenv(name)
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert setting in message and variable in message, message
    assert "16 characters" in message and "openssl rand -hex 32" in message
    assert SHORT not in message  # the value itself is never echoed


def test_start_up_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """What an admin who kept ``change-me`` from the example sees: exit 2, one line."""
    result = subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "serve"],
        env={
            **_env(),
            "PICTGUARD_STORAGE__STATE_DIR": str(tmp_path),
            "PICTGUARD_ENFORCE__ADMIN_TOKEN": SHORT,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "PICTGUARD_ENFORCE__ADMIN_TOKEN" in lines[0] and "16 characters" in lines[0]
    assert SHORT not in result.stderr + result.stdout


@pytest.mark.parametrize("blank", ["", "   "])
async def test_empty_webhook_token_leaves_the_endpoint_off(
    blank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty MinIO token is no token: the endpoint answers 404, whatever header comes."""
    for name in list(os.environ):
        if name.startswith("PICTGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PICTGUARD_INGEST__WEBHOOK__ENABLED", "true")
    monkeypatch.setenv("PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN", blank)
    monkeypatch.setenv("PICTGUARD_INGEST__WEBHOOK__CEPH_TOKEN", blank)
    settings = load_settings()
    assert settings.ingest.webhook.minio_token is None
    bus = MemoryBus()
    await bus.start()
    app = create_webhook_app(settings, bus)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
        for headers in ({"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer "}):
            answer = await client.post("/hooks/minio", json={"Records": []}, headers=headers)
            assert answer.status_code == 404, answer.text
        answer = await client.post("/hooks/ceph", params={"token": ""}, json={"Records": []})
        assert answer.status_code == 404, answer.text
    await bus.stop()


def test_client_with_empty_token_is_not_open_to_every_address() -> None:
    """``"token": ""`` means no token: without cidrs, start-up refuses the client."""
    with pytest.raises(SettingsError, match=r"api\.clients\.0.*neither a token nor cidrs"):
        load_settings(api={"clients": [{"id": "script", "token": ""}]})
    # With networks the empty token is simply unset, and the networks still apply.
    settings = load_settings(api={"clients": [{"id": "lan", "token": "", "cidrs": ["10.0.0.0/8"]}]})
    assert settings.api.clients[0].token is None
    assert authorise(settings.api, "lan", token=None, peer="10.1.2.3", forwarded_for=None)
    with pytest.raises(Unauthorized):
        authorise(settings.api, "lan", token=None, peer="203.0.113.9", forwarded_for=None)


def test_empty_admin_token_keeps_the_admin_api_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICTGUARD_ENFORCE__ADMIN_TOKEN", "")
    assert load_settings().enforce.admin_token is None
    monkeypatch.setenv("PICTGUARD_ENFORCE__ADMIN_TOKEN", LONG)
    token = load_settings().enforce.admin_token
    assert token is not None and token.get_secret_value() == LONG


def test_the_shipped_examples_carry_no_usable_placeholder() -> None:
    """docker/*.env.example must not ship a secret that passes (or a `change-me` to keep)."""
    root = Path(__file__).resolve().parents[2]
    for example in sorted((root / "docker").glob("*env.example")):
        values = {}
        for line in example.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip()
        for name, value in values.items():
            if any(word in name for word in ("TOKEN", "SECRET", "PASSWORD", "API_KEY")):
                assert value == "", f"{example.name}: {name} ships a value ({value!r})"
        assert "openssl rand -hex 32" in example.read_text(), example.name
    # And the YAML configs beside them keep secrets out.
    for config in sorted((root / "docker" / "config").glob("*.yaml")):
        text = yaml.safe_load(config.read_text()) or {}
        assert "admin_token" not in str(text), config.name
