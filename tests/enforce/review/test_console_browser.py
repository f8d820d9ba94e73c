"""The review console in a real browser (headless Chromium), against `pictguard review`.

A reviewer signs in, works the queue with the keyboard, sees only blurred thumbnails, may
reveal one image on purpose, and decides; the decisions land in the allowlist, the
quarantine folder and the audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.enforce.review.browser import (
    Console,
    chromium,
    need_browser,
    record_bodies,
    review_console,
    save_screenshot,
    sign_in,
)
from tests.enforce.review.scenario import (
    REVIEWERS,
    Scenario,
    at_size,
    build,
    laplacian_energy,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    need_browser()
    return asyncio.run(build(tmp_path_factory.mktemp("review")))


@pytest.fixture(scope="module")
def console(scenario: Scenario) -> Iterator[Console]:
    with review_console(scenario.config_file, scenario.root) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need_browser()
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    yield context.new_page()
    context.close()


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def item_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("tr.item", "rows => rows.map(r => r.dataset.item)")


def item_for(page: Any, key: str) -> str:
    row = page.locator("tr.item", has_text=key)
    return row.get_attribute("data-item")


def test_the_queue_shows_only_blurred_thumbnails(
    scenario: Scenario, console: Console, page: Any, tmp_path: Path
) -> None:
    received: list[tuple[str, bytes]] = []
    record_bodies(page, received)
    sign_in(page, console, REVIEWERS["ana"])
    page.wait_for_load_state("networkidle")

    keys = page.eval_on_selector_all("tr.item td.key a", "links => links.map(a => a.textContent)")
    # Newest first: the kept upload, then the model verdict, then the scan's quarantines.
    assert keys[0].startswith("uploads/") and keys[0].endswith(".jpg")
    assert keys[1] == scenario.model_only
    assert set(keys[2:]) == {n for n in scenario.listed if n != scenario.upload}
    model_row = page.locator("tr.item", has_text=scenario.model_only)
    assert "model only" in model_row.inner_text()
    assert "clip, nudenet" in model_row.inner_text() and "csam 0.83" in model_row.inner_text()
    listed_row = page.locator("tr.item", has_text=sorted(scenario.listed)[0])
    assert "hash list" in listed_row.inner_text()
    assert "pict-rs upload via client pictrs" in page.locator("tr.item").first.inner_text()
    # Bulk selection is offered for hash-list matches only.
    assert model_row.locator("input[type=checkbox]").count() == 0
    assert listed_row.locator("input[type=checkbox]").count() == 1

    thumbs = {url: body for url, body in received if url.endswith("/thumb")}
    assert len(thumbs) == len(keys)
    originals = {hashlib.sha256(data).hexdigest() for data in scenario.images.values()}
    assert not originals & {hashlib.sha256(body).hexdigest() for _, body in received}
    model_thumb = thumbs[console.page_url(f"/items/{item_for(page, scenario.model_only)}/thumb")]
    with Image.open(io.BytesIO(model_thumb)) as shown:
        assert shown.mode == "L"  # greyscale by default
        size = shown.size
    original = laplacian_energy(at_size(scenario.images[scenario.model_only], size))
    blurred = laplacian_energy(model_thumb)
    assert blurred < original / 10, (blurred, original)
    save_screenshot(page, "queue", tmp_path)


def test_the_raw_image_needs_a_reveal_which_the_audit_records(
    scenario: Scenario, console: Console, page: Any, tmp_path: Path
) -> None:
    sign_in(page, console, REVIEWERS["bo"])
    item = item_for(page, scenario.model_only)
    original_url = console.page_url(f"/items/{item}/original")
    refused = page.request.get(original_url)
    assert refused.status == 403 and "reveal" in refused.text()

    page.goto(console.page_url(f"/items/{item}"))
    assert page.locator("p.warning").inner_text().startswith("Model verdict only.")
    assert "human must confirm" in page.locator("p.warning").inner_text()
    save_screenshot(page, "item", tmp_path)
    page.click("#reveal")  # the box is not ticked: the browser's own check refuses
    assert page.locator("#revealed").count() == 0
    page.check("input[name=understand]")
    with page.expect_response(lambda r: r.url == original_url) as shown:
        page.click("#reveal")
    response = shown.value
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    revealed = response.body()
    assert laplacian_energy(revealed) > 5 * laplacian_energy(
        page.request.get(console.page_url(f"/items/{item}/thumb?size=384")).body()
    )

    reveals = rows(
        scenario.settings.storage.state_file,
        "SELECT reviewer, item_id FROM review_events WHERE event = 'reveal'",
    )
    assert reveals == [("bo", item)]
    views = rows(
        scenario.settings.storage.state_file,
        "SELECT reviewer FROM review_events WHERE event = 'view_item' AND item_id = ?",
        item,
    )
    assert ("bo",) in views
    # Another reviewer's session has no reveal of its own: still refused for them.
    other = page.context.browser.new_context()
    try:
        second = other.new_page()
        sign_in(second, console, REVIEWERS["ana"])
        assert second.request.get(original_url).status == 403
    finally:
        other.close()


def test_posts_without_the_csrf_token_fail(scenario: Scenario, console: Console, page: Any) -> None:
    sign_in(page, console, REVIEWERS["ana"])
    item = item_for(page, sorted(scenario.listed)[0])
    target = console.page_url(f"/items/{item}/decide")
    # The session cookie is sent (same origin), the token is not: refused.
    missing = page.request.post(target, form={"decision": "delete", "reason": "x"})
    assert missing.status == 403
    wrong = page.request.post(target, form={"decision": "delete", "csrf": "forged", "reason": "x"})
    assert wrong.status == 403
    # A page elsewhere posting a form to the console: the cookie is SameSite=Strict.
    page.goto("about:blank")
    page.set_content(
        f'<form method="post" action="{target}"><input name="decision" value="delete">'
        '<button id="go">go</button></form>'
    )
    with page.expect_navigation():
        page.click("#go")
    assert "Sign in again" in page.content()
    deleted = rows(
        scenario.settings.storage.state_file,
        "SELECT COUNT(*) FROM review_events WHERE event = 'delete'",
    )
    assert deleted == [(0,)]
    assert scenario.quarantined(sorted(scenario.listed)[0]).exists()


def test_keyboard_decisions_reach_the_allowlist_the_quarantine_and_the_audit(
    scenario: Scenario, console: Console, page: Any
) -> None:
    state = scenario.settings.storage.state_file
    sign_in(page, console, REVIEWERS["ana"])
    # j/k move over the queue, o opens: the second row is the model verdict.
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(re.compile(r".*/items/[0-9a-f]{32}$"))
    assert page.locator("h1.key").inner_text() == scenario.model_only
    page.fill("#reason", "a sunset, not abuse")
    page.locator("#reason").blur()  # typing in a field never triggers a shortcut
    page.keyboard.press("a")  # allow: a false positive
    page.wait_for_url(re.compile(r".*did=allow$"))
    sha = scenario.sha256(scenario.model_only)
    [(entry,)] = rows(state, "SELECT value FROM kv WHERE tbl = 'hashlists' AND key = ?", sha)
    assert b'"list":"allow"' in entry and b'"author":"ana"' in entry
    restored = scenario.media / scenario.model_only
    assert restored.read_bytes() == scenario.images[scenario.model_only]  # byte-identical
    assert not scenario.quarantined(scenario.model_only).exists()
    [(detail,)] = rows(
        state, "SELECT json_extract(body, '$.detail') FROM actions WHERE action = 'restore'"
    )
    assert "a sunset, not abuse" in detail

    # The next item opened by itself; c confirms a hash-list match (kept for a report).
    listed = sorted(n for n in scenario.listed if n != scenario.upload)
    page.goto(console.page_url(f"/items/{item_for_page(page, console, listed[0])}"))
    page.keyboard.press("c")
    page.wait_for_url(re.compile(r".*did=confirm$"))
    assert scenario.quarantined(listed[0]).exists()
    # d deletes another one for good.
    page.goto(console.page_url(f"/items/{item_for_page(page, console, listed[1])}"))
    page.keyboard.press("d")
    page.wait_for_url(re.compile(r".*did=delete$"))
    assert not scenario.quarantined(listed[1]).exists()
    events = rows(
        state,
        "SELECT reviewer, event FROM review_events WHERE event IN ('allow', 'confirm', 'delete') "
        "ORDER BY id",
    )
    assert events == [("ana", "allow"), ("ana", "confirm"), ("ana", "delete")]
    [(outcome,)] = rows(state, "SELECT outcome FROM actions WHERE action = 'delete'")
    assert outcome == "done"

    # Confirmed items wait under "To report", with the export command.
    page.goto(console.page_url("/queue?status=confirmed"))
    assert listed[0] in page.locator("table.queue").inner_text()
    assert "pictguard evidence export" in page.content()

    # Bulk: x selects the remaining hash-list match; confirm selected.
    page.goto(console.page_url("/queue"))
    remaining = [k for k in keys_on(page) if k in listed]
    assert remaining == [listed[2]]
    row = page.locator("tr.item", has_text=listed[2])
    index = keys_on(page).index(listed[2])
    for _ in range(index):
        page.keyboard.press("j")
    page.keyboard.press("x")
    assert row.locator("input[type=checkbox]").is_checked()
    page.click("button[name=decision][value=confirm]")
    page.wait_for_url(re.compile(r".*did=bulk-confirm.*"))
    assert "Confirmed 1 item(s)." in page.content()


def keys_on(page: Any) -> list[str]:
    return page.eval_on_selector_all("tr.item td.key a", "links => links.map(a => a.textContent)")


def item_for_page(page: Any, console: Console, key: str) -> str:
    page.goto(console.page_url("/queue?status=all"))
    return item_for(page, key)


def test_sign_in_with_the_admin_token_needs_a_name_and_help_is_a_key_away(
    scenario: Scenario, console: Console, page: Any, tmp_path: Path
) -> None:
    from tests.enforce.review.scenario import ADMIN_TOKEN

    page.goto(console.page_url("/sign-in"))
    save_screenshot(page, "sign-in", tmp_path)
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    assert "type your name" in page.locator("p.error").inner_text()
    sign_in(page, console, ADMIN_TOKEN, name="carol")
    assert page.locator("header .who").inner_text() == "carol"
    assert page.locator("#help").is_hidden()
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    [(via,)] = rows(
        scenario.settings.storage.state_file,
        "SELECT json_extract(detail, '$.via') FROM review_events "
        "WHERE event = 'sign_in' AND reviewer = 'carol'",
    )
    assert via == "admin token"
