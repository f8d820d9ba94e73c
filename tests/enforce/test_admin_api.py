"""Admin endpoints: bearer token, status, restore, allow, audit."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from enforce.admin import EnforceContext, static_context
from enforce.admin_api import admin_router
from enforce.stage import EnforceStage
from pipeline.bus.base import Message
from pipeline.events import encode
from pipeline.state.sqlite import SqliteState
from pipeline.topics import VERDICTS
from tests.enforce.helpers import exists, verdict_for

TOKEN = "correct-horse-battery-staple"


def client_for(ctx: EnforceContext, token: str | None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(admin_router(static_context(ctx), token=token))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_token_is_required(env: Any, state: SqliteState) -> None:
    settings, bus, stores, _ = await env()
    ctx = EnforceContext(settings, stores, state, bus)
    async with client_for(ctx, None) as disabled:
        r = await disabled.get("/admin/enforce/status", headers={"Authorization": "Bearer x"})
        assert r.status_code == 503 and "ADMIN_TOKEN" in r.json()["detail"]
    async with client_for(ctx, TOKEN) as api:
        assert (await api.get("/admin/enforce/status")).status_code == 401
        wrong = await api.get("/admin/audit", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        basic = await api.post(
            "/admin/restore", json={"target": "x"}, headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert basic.status_code == 401
        ok = await api.get("/admin/enforce/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["guard"]["tripped"] is False


async def test_restore_allow_and_audit_over_http(
    env: Any, state: SqliteState, bucket: str, put: Any, s3: Any
) -> None:
    settings, bus, stores, _ = await env(quarantine="quarantine/")
    data = put(bucket, "img.jpg")
    stage = EnforceStage(bus, settings, stores, state)
    await stage.start()
    verdict = verdict_for(bucket, "img.jpg", data=data)
    await stage.handle([Message(settings.topic(VERDICTS), encode(verdict), verdict.key.encode())])
    await stage.stop()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client_for(EnforceContext(settings, stores, state, bus), TOKEN) as api:
        missing = await api.post("/admin/restore", json={"target": "0" * 32}, headers=auth)
        assert missing.status_code == 404
        bad = await api.post("/admin/allow", json={"target": "nope", "reason": "r"}, headers=auth)
        assert bad.status_code == 400 and "neither a sha256" in bad.json()["detail"]
        allowed = await api.post(
            "/admin/allow",
            json={"target": f"s3://{bucket}/img.jpg", "reason": "fine", "author": "ana"},
            headers=auth,
        )
        assert allowed.status_code == 200, allowed.text
        body = allowed.json()
        assert body["entry"]["list"] == "allow"
        assert [a["outcome"] for a in body["actions"]] == ["done"]
        assert exists(s3, bucket, "img.jpg")
        audit = await api.get("/admin/audit", params={"action": "restore"}, headers=auth)
        assert [a["verdict_id"] for a in audit.json()] == [verdict.verdict_id]
        resume = await api.post("/admin/enforce/resume", json={}, headers=auth)
        assert resume.json()["summary"].startswith("guard was not tripped")
