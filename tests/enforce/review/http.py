"""The console over HTTP without a browser (httpx on the ASGI app), for the checks a
browser makes awkward: headers, cookie flags, refusals, rate limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from enforce.admin import EnforceContext, static_context
from enforce.review.app import review_router
from pictguard.settings import Settings
from pipeline.bus.memory import MemoryBus
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores

PREFIX = "/admin/review"


@dataclass
class Opened:
    """A client on the console app plus what it runs over."""

    client: httpx.AsyncClient
    state: SqliteState
    stores: Stores
    settings: Settings


@asynccontextmanager
async def console(
    settings: Settings, *, base_url: str = "http://console.test", **router: Any
) -> AsyncIterator[Opened]:
    """The console router alone on a FastAPI app, over the settings' state file."""
    state = SqliteState(settings.storage.state_file)
    await state.start()
    stores = Stores(settings.s3)
    ctx = EnforceContext(settings, stores, state, MemoryBus())
    app = FastAPI()
    app.include_router(review_router(static_context(ctx), settings=settings.enforce, **router))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Opened(client, state, stores, settings)
    finally:
        await stores.close()
        await state.stop()


def form_token(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no csrf field on the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, name: str = "") -> str:
    """Sign in through the form; returns the session's CSRF token (from the queue page)."""
    page = await client.get(f"{PREFIX}/sign-in")
    done = await client.post(
        f"{PREFIX}/sign-in", data={"csrf": form_token(page.text), "token": token, "name": name}
    )
    assert done.status_code == 303 and done.headers["location"] == f"{PREFIX}/queue", done.text
    queue = await client.get(f"{PREFIX}/queue")
    assert queue.status_code == 200
    return form_token(queue.text)


def item_ids(html: str) -> list[str]:
    """The item ids a queue page lists, in order."""
    return re.findall(r'data-item="([0-9a-f]{32})"', html)
