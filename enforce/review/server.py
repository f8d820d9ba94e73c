"""``pictguard review``: the console alone, on 127.0.0.1, over this machine's state."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from enforce.admin import static_context
from enforce.cli import ContextFactory
from enforce.review.app import review_router
from enforce.settings import EnforceSettings
from pipeline.http import serve_app

LOOPBACK = "127.0.0.1"


def console_app(
    context: ContextFactory, settings: EnforceSettings, *, local_token: str | None = None
) -> FastAPI:
    """An app with only the review console (and ``/`` leading to it)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(review_router(context, settings=settings, local_token=local_token))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/admin/review/queue", status_code=303)

    return app


async def serve_console(
    context: ContextFactory,
    *,
    port: int | None = None,
    local_token: str | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the console on loopback until SIGINT/SIGTERM (or ``stop``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with context() as ctx:
        settings = ctx.settings.enforce
        chosen = settings.review.port if port is None else port
        app = console_app(static_context(ctx), settings, local_token=local_token)
        started = asyncio.Event()

        async def announce() -> None:
            await started.wait()
            if on_listening is not None:
                on_listening(f"http://{LOOPBACK}:{chosen}/admin/review/")

        notice = asyncio.create_task(announce())
        try:
            await serve_app(
                app,
                LOOPBACK,
                chosen,
                stop,
                what="review console",
                hint="--port or PICTGUARD_ENFORCE__REVIEW__PORT",
                started=started,
            )
        finally:
            notice.cancel()
