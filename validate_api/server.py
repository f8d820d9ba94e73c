"""Run the API: as the ``api`` role on Kafka, or inside ``pictguard serve``."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from classify.cache import VerdictCache
from classify.engine import ClassifyEngine
from enforce.admin import EnforceContext, static_context
from enforce.admin_api import admin_router
from pipeline.http import serve_app
from pipeline.runtime import Runtime, group
from pipeline.settings import SettingsError
from pipeline.topics import REPLIES, SCAN_SYNC, inline_record_bytes
from validate_api.app import ApiContext, create_app
from validate_api.replies import ReplyRouter
from validate_api.service import FastPath, Validator

log = logging.getLogger(__name__)


async def build_api(runtime: Runtime, engine: ClassifyEngine | None = None) -> FastAPI:
    """The app for this runtime; ``engine`` is the classify engine in single-process mode."""
    s = runtime.settings
    needed = inline_record_bytes(s.api.max_body_bytes)
    if engine is None and needed > s.kafka.max_request_size:
        raise SettingsError(
            f"api.max_body_bytes={s.api.max_body_bytes} needs Kafka records of {needed} bytes "
            f"but kafka.max_request_size is {s.kafka.max_request_size}: raise "
            "PICTGUARD_KAFKA__MAX_REQUEST_SIZE (and the broker's message.max.bytes) or lower "
            "PICTGUARD_API__MAX_BODY_BYTES"
        )
    if engine is None:
        # Distributed: the lists here, the models on the classify workers.
        only_lists = s.classify.model_copy(
            update={"classifiers": ["hashlist"], "verdict_cache": False}
        )
        engine = ClassifyEngine(only_lists, runtime.tables)
        await engine.start()
        runtime._closers.append(engine.stop)
        fast = FastPath(engine, VerdictCache(runtime.tables.verdict_cache))
    else:
        fast = FastPath(engine)
    reply_topic = s.topic(REPLIES + s.api.replica_id)
    router = ReplyRouter(
        runtime.bus, reply_topic, group(s, f"api-{s.api.replica_id}"), on_verdict=fast.learn
    )
    await router.start()

    async def close_router() -> None:
        await router.stop()
        await runtime.bus.drop_topics([reply_topic])

    runtime._closers.append(close_router)
    validator = Validator(s.api, runtime.bus, s.topic(SCAN_SYNC), router, fast)
    admin = admin_router(
        static_context(
            EnforceContext(s, runtime.stores, runtime.state, runtime.bus, runtime.tables.hashlists)
        ),
        token=s.enforce.admin_token,
    )
    ready_engine = engine
    return create_app(
        ApiContext(
            s.api,
            validator,
            ready=lambda: router.ready.is_set() and ready_engine.ready,
            admin_router=admin,
        )
    )


async def serve_http(
    app: FastAPI, host: str, port: int, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Serve the API until ``stop`` is set; in-flight requests finish first."""
    await serve_app(
        app,
        host,
        port,
        stop,
        what="validate API",
        hint="PICTGUARD_API__HOST/PORT",
        started=started,
    )
