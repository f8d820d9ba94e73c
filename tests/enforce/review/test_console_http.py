"""The console's protections over HTTP: headers, cookies, sign-in, CSRF, refusals, and the
decisions that a browser test does not reach (held actions, kept uploads)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from enforce.review.auth import MAX_FAILURES, SESSION_COOKIE
from enforce.review.settings import ReviewSettings
from pictguard.settings import load_settings
from tests.enforce.review.http import PREFIX, console, form_token, item_ids, sign_in
from tests.enforce.review.scenario import (
    ADMIN_TOKEN,
    REVIEWERS,
    Scenario,
    build,
    held,
    scenario_config,
)


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def scenario(tmp_path: Path) -> Scenario:
    return await build(tmp_path, listed=2, clean=1)


def item_of(html: str, key: str) -> str:
    """The item id of the row showing ``key``."""
    for block in html.split('<tr class="item"')[1:]:
        if f">{key}</a>" in block:
            return re.search(r'data-item="([0-9a-f]{32})"', block).group(1)  # type: ignore[union-attr]
    raise AssertionError(f"{key} not in the queue")


async def test_every_page_and_image_carries_the_protective_headers(scenario: Scenario) -> None:
    async with console(scenario.settings) as c:
        await sign_in(c.client, REVIEWERS["ana"])
        queue = await c.client.get(f"{PREFIX}/queue")
        item = item_ids(queue.text)[0]
        for path in ("/queue", f"/items/{item}", f"/items/{item}/thumb", "/audit", "/sign-in"):
            response = await c.client.get(PREFIX + path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["cache-control"] == "no-store", path
            assert response.headers["x-content-type-options"] == "nosniff"
        thumb = await c.client.get(f"{PREFIX}/items/{item}/thumb")
        assert thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"
        static = await c.client.get(f"{PREFIX}/static/review.js")
        assert static.headers["content-type"].startswith("text/javascript")
        assert (await c.client.get(f"{PREFIX}/static/..%2Fapp.py")).status_code == 404


async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(
    scenario: Scenario,
) -> None:
    async with console(scenario.settings, base_url="https://console.test") as c:
        page = await c.client.get(f"{PREFIX}/sign-in")
        signed = await c.client.post(
            f"{PREFIX}/sign-in",
            data={"csrf": form_token(page.text), "token": REVIEWERS["bo"], "name": ""},
        )
        cookie = next(
            v for k, v in signed.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
        assert f"Path={PREFIX}" in cookie
    async with console(scenario.settings) as plain:
        page = await plain.client.get(f"{PREFIX}/sign-in")
        signed = await plain.client.post(
            f"{PREFIX}/sign-in",
            data={"csrf": form_token(page.text), "token": REVIEWERS["bo"], "name": ""},
        )
        cookie = signed.headers["set-cookie"]
        assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie never returns
    # The state file keeps only a hash of the session id.
    session_id = re.search(rf"{SESSION_COOKIE}=([^;]+)", cookie).group(1)  # type: ignore[union-attr]
    stored = rows(scenario.settings.storage.state_file, "SELECT session_hash FROM review_sessions")
    assert (hashlib.sha256(session_id.encode()).hexdigest(),) in stored
    assert all(session_id not in row[0] for row in stored)


async def test_sign_in_refuses_wrong_tokens_and_then_everyone_from_that_address(
    scenario: Scenario,
) -> None:
    async with console(scenario.settings) as c:
        page = await c.client.get(f"{PREFIX}/sign-in")
        csrf = form_token(page.text)
        missing_nonce = await c.client.post(f"{PREFIX}/sign-in", data={"token": REVIEWERS["ana"]})
        assert missing_nonce.status_code == 403
        for _ in range(MAX_FAILURES):
            wrong = await c.client.post(
                f"{PREFIX}/sign-in", data={"csrf": csrf, "token": "not-a-token", "name": "x"}
            )
            assert wrong.status_code == 303 and "error=wrong+token" in wrong.headers["location"]
        right = await c.client.post(
            f"{PREFIX}/sign-in", data={"csrf": csrf, "token": REVIEWERS["ana"], "name": ""}
        )
        assert right.status_code == 429
        assert SESSION_COOKIE not in right.headers.get("set-cookie", "")
    failed = rows(
        scenario.settings.storage.state_file,
        "SELECT json_extract(detail, '$.peer') FROM review_events WHERE event = 'sign_in_failed'",
    )
    assert failed == [("203.0.113.7",)] * MAX_FAILURES


async def test_pages_need_a_session_and_signing_out_ends_it(scenario: Scenario) -> None:
    async with console(scenario.settings) as c:
        anonymous = await c.client.get(f"{PREFIX}/queue")
        assert anonymous.status_code == 303 and anonymous.headers["location"].endswith("/sign-in")
        item = item_ids((await _queue_as(c, REVIEWERS["ana"])).text)[0]
        c.client.cookies.clear()
        assert (await c.client.get(f"{PREFIX}/items/{item}/thumb")).status_code == 401
        csrf = await sign_in(c.client, REVIEWERS["ana"])
        old = c.client.cookies.get(SESSION_COOKIE)
        out = await c.client.post(f"{PREFIX}/sign-out", data={"csrf": csrf})
        assert out.status_code == 303
        again = await c.client.get(f"{PREFIX}/queue", cookies={SESSION_COOKIE: old or ""})
        assert again.status_code == 303  # the old cookie no longer opens anything


async def _queue_as(c: Any, token: str) -> Any:
    await sign_in(c.client, token)
    return await c.client.get(f"{PREFIX}/queue")


async def test_an_idle_session_expires(scenario: Scenario) -> None:
    async with console(scenario.settings) as c:
        await sign_in(c.client, REVIEWERS["ana"])
        await c.state.execute("UPDATE review_sessions SET last_seen = '2000-01-01T00:00:00+00:00'")
        assert (await c.client.get(f"{PREFIX}/queue")).status_code == 303


async def test_without_any_token_the_console_is_off(tmp_path: Path) -> None:
    config = scenario_config(tmp_path)
    config["enforce"].pop("admin_token")
    config["enforce"]["review"] = {}
    async with console(load_settings(**config)) as c:
        off = await c.client.get(f"{PREFIX}/sign-in")
        assert off.status_code == 503 and "PICTGUARD_ENFORCE__ADMIN_TOKEN" in off.text


def test_reviewer_tokens_must_be_long_and_names_plain() -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        ReviewSettings(reviewers={"ana": "short"})
    with pytest.raises(ValueError, match="reviewer name"):
        ReviewSettings(reviewers={"<script>": "x" * 20})
    with pytest.raises(ValueError, match="shares a token"):
        ReviewSettings(reviewers={"a": "y" * 20, "b": "y" * 20})


async def test_bulk_is_for_hash_list_matches_and_confirmed_evidence_is_not_deleted(
    scenario: Scenario,
) -> None:
    async with console(scenario.settings) as c:
        csrf = await sign_in(c.client, REVIEWERS["ana"])
        queue = (await c.client.get(f"{PREFIX}/queue")).text
        model = item_of(queue, scenario.model_only)
        listed = item_of(queue, sorted(n for n in scenario.listed if n != scenario.upload)[0])
        refused = await c.client.post(
            f"{PREFIX}/bulk",
            data={"csrf": csrf, "decision": "delete", "item": [model, listed]},
        )
        assert refused.status_code == 303 and "only+for+hash-list" in refused.headers["location"]
        allow_bulk = await c.client.post(
            f"{PREFIX}/bulk", data={"csrf": csrf, "decision": "allow", "item": [listed]}
        )
        assert allow_bulk.status_code == 400
        assert scenario.quarantined(scenario.model_only).exists()

        confirm = await c.client.post(
            f"{PREFIX}/items/{listed}/decide", data={"csrf": csrf, "decision": "confirm"}
        )
        assert confirm.status_code == 303
        delete = await c.client.post(
            f"{PREFIX}/items/{listed}/decide", data={"csrf": csrf, "decision": "delete"}
        )
        assert delete.status_code == 303 and "the+evidence" in delete.headers["location"]
        too_big = await c.client.post(
            f"{PREFIX}/items/{listed}/decide",
            content=b"csrf=" + b"x" * 70_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert too_big.status_code == 413


async def test_allowing_a_kept_upload_allowlists_it_and_removes_the_copy(
    scenario: Scenario,
) -> None:
    async with console(scenario.settings) as c:
        csrf = await sign_in(c.client, REVIEWERS["bo"])
        queue = (await c.client.get(f"{PREFIX}/queue")).text
        upload = item_ids(queue)[0]
        [copy] = list((scenario.quarantine / "uploads").rglob("*.jpg"))
        assert copy.read_bytes() == scenario.images[scenario.upload]
        done = await c.client.post(
            f"{PREFIX}/items/{upload}/decide",
            data={"csrf": csrf, "decision": "allow", "reason": "a harmless photo"},
        )
        assert done.status_code == 303
        assert not copy.exists()
    state = scenario.settings.storage.state_file
    sha = scenario.sha256(scenario.upload)
    [(entry,)] = rows(state, "SELECT value FROM kv WHERE tbl = 'hashlists' AND key = ?", sha)
    assert b'"list":"allow"' in entry and b'"author":"bo"' in entry
    [(outcome, detail)] = rows(
        state,
        "SELECT outcome, json_extract(body, '$.detail') FROM actions WHERE action = 'delete'",
    )
    assert outcome == "done" and "false positive" in detail and "bo" in detail


async def test_confirming_a_held_item_releases_it_into_quarantine(tmp_path: Path) -> None:
    scenario, _verdicts = await held(tmp_path)
    async with console(scenario.settings) as c:
        csrf = await sign_in(c.client, ADMIN_TOKEN, name="dee")
        queue = (await c.client.get(f"{PREFIX}/queue")).text
        assert "held</span>" in queue
        item = item_of(queue, "second.jpg")
        assert (scenario.media / "second.jpg").exists()
        done = await c.client.post(
            f"{PREFIX}/items/{item}/decide", data={"csrf": csrf, "decision": "confirm"}
        )
        assert done.status_code == 303
    assert not (scenario.media / "second.jpg").exists()
    assert scenario.quarantined("second.jpg").read_bytes() == scenario.images["second.jpg"]
    state = scenario.settings.storage.state_file
    assert rows(state, "SELECT COUNT(*) FROM enforce_held WHERE resolved_at IS NULL") == [(0,)]
    [(reviewer,)] = rows(state, "SELECT reviewer FROM review_events WHERE event = 'confirm'")
    assert reviewer == "dee"


async def test_reveal_can_be_turned_off_per_reviewer_and_for_everyone(
    scenario: Scenario,
) -> None:
    async with console(scenario.settings) as c:
        csrf = await sign_in(c.client, REVIEWERS["ana"])
        item = item_ids((await c.client.get(f"{PREFIX}/queue")).text)[1]
        saved = await c.client.post(
            f"{PREFIX}/settings",
            data={"csrf": csrf, "blur": "light", "greyscale": "on", "reveal_disabled": "on"},
        )
        assert saved.status_code == 303
        page = await c.client.get(f"{PREFIX}/items/{item}")
        assert 'id="reveal"' not in page.text
        refused = await c.client.post(
            f"{PREFIX}/items/{item}/reveal", data={"csrf": csrf, "understand": "yes"}
        )
        assert refused.status_code == 403
        assert (await c.client.get(f"{PREFIX}/items/{item}/original")).status_code == 403
    settings = scenario.settings.model_copy(deep=True)
    settings.enforce.review.allow_reveal = False
    async with console(settings) as c:
        csrf = await sign_in(c.client, REVIEWERS["bo"])
        refused = await c.client.post(
            f"{PREFIX}/items/{item}/reveal", data={"csrf": csrf, "understand": "yes"}
        )
        assert refused.status_code == 403 and "on this instance" in refused.text
    events = rows(
        scenario.settings.storage.state_file,
        "SELECT COUNT(*) FROM review_events WHERE event = 'reveal'",
    )
    assert events == [(0,)]


async def test_the_api_serves_the_console_beside_the_admin_endpoints(scenario: Scenario) -> None:
    import httpx
    from fastapi import FastAPI

    from pictguard.roles import admin_endpoints
    from pictguard.runtime import open_runtime
    from pipeline.context import Mode

    async with open_runtime(scenario.settings, mode=Mode.SINGLE) as rt:
        await rt.start_tables()
        app = FastAPI()
        router = await admin_endpoints(rt)
        assert router is not None
        app.include_router(router)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            csrf = await sign_in(client, REVIEWERS["ana"])
            assert csrf
            queue = await client.get(f"{PREFIX}/queue")
            assert len(item_ids(queue.text)) == 4  # two listed, a model verdict, an upload
            # The bearer-token admin endpoints are unchanged beside it.
            assert (await client.get("/admin/enforce/status")).status_code == 401
            status = await client.get(
                "/admin/enforce/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert status.status_code == 200
        await rt.aclose()


def test_pictguard_review_without_tokens_prints_a_one_time_token(tmp_path: Path) -> None:
    """`pictguard review` on a box with no tokens configured: loopback only, and a token
    for this run printed for the admin who started it."""
    import asyncio

    import httpx

    from tests.enforce.review.browser import review_console

    scenario = asyncio.run(build(tmp_path, listed=1, clean=0))
    scenario.config["enforce"].pop("admin_token")
    scenario.config["enforce"]["review"] = {}
    with review_console(scenario.config_file, tmp_path) as running:
        assert running.url.startswith("http://127.0.0.1:")
        output = running.output()
        token = re.search(r"one-time token[^\n]*\n\s+(\S+)", output).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=running.url) as client:
            page = client.get(f"{PREFIX}/sign-in")
            wrong = client.post(
                f"{PREFIX}/sign-in",
                data={"csrf": form_token(page.text), "token": "guess", "name": "root"},
            )
            assert "error=wrong+token" in wrong.headers["location"]
            right = client.post(
                f"{PREFIX}/sign-in",
                data={"csrf": form_token(page.text), "token": token, "name": "root"},
            )
            assert right.status_code == 303 and right.headers["location"].endswith("/queue")
            queue = client.get(f"{PREFIX}/queue")
            assert len(item_ids(queue.text)) == 3  # one listed, a model verdict, an upload
    [(via,)] = rows(
        scenario.settings.storage.state_file,
        "SELECT json_extract(detail, '$.via') FROM review_events WHERE event = 'sign_in'",
    )
    assert via == "one-time token"
