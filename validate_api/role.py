"""The validate API role: the app over this process's bus, and serving it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from pipeline.context import Mode, RoleContext
from pipeline.http import HttpLimits, serve_app
from pipeline.policy import ActionPolicy
from pipeline.settings import SettingsError
from pipeline.topics import (
    REPLIES,
    SCAN_SYNC,
    UNVERIFIED,
    UPLOAD_EVIDENCE,
    VERDICTS,
    inline_record_bytes,
)
from validate_api.app import ApiContext, create_app
from validate_api.evidence import EvidenceSender
from validate_api.replies import ReplyRouter
from validate_api.service import FastLookup, Validator
from validate_api.settings import ApiConfig, ApiSettings
from validate_api.unverified import UnverifiedReporter

log = logging.getLogger(__name__)


def check_record_size(settings: ApiConfig) -> None:
    """Refuse a body limit whose uploads would not fit in one Kafka record."""
    needed = inline_record_bytes(settings.api.max_body_bytes)
    if needed > settings.kafka.max_request_size:
        raise SettingsError(
            f"api.max_body_bytes={settings.api.max_body_bytes} needs Kafka records of {needed} "
            f"bytes but kafka.max_request_size is {settings.kafka.max_request_size}: raise "
            "PICTGUARD_KAFKA__MAX_REQUEST_SIZE (and the broker's message.max.bytes) or lower "
            "PICTGUARD_API__MAX_BODY_BYTES"
        )


async def build_app(
    ctx: RoleContext[ApiConfig],
    fast: FastLookup,
    *,
    admin_router: APIRouter | None = None,
    routers: Sequence[APIRouter] = (),
    policy: ActionPolicy | None = None,
) -> FastAPI:
    """The API app: the fast path first, else the sync lane and this replica's replies.

    ``policy`` is enforce's action policy: unless ``api.reject`` is set, an upload is
    refused for the decisions that policy removes from storage, and a refused upload whose
    decision is quarantined goes to enforce on ``upload-evidence`` to be kept as evidence.
    """
    s = ctx.settings
    if ctx.mode is Mode.DISTRIBUTED:
        check_record_size(s)
    reply_topic = s.topic(REPLIES + s.api.replica_id)
    router = ReplyRouter(
        ctx.bus, reply_topic, s.group(f"api-{s.api.replica_id}"), on_verdict=fast.learn
    )
    await router.start()

    async def close_router() -> None:
        await router.stop()
        await ctx.bus.drop_topics([reply_topic])

    ctx.cleanups.push_async_callback(close_router)
    reporter = UnverifiedReporter(ctx.bus, s.topic(UNVERIFIED), s.api.replica_id)
    reporter.start()
    ctx.cleanups.push_async_callback(reporter.stop)
    validator = Validator(
        s.api,
        ctx.bus,
        s.topic(SCAN_SYNC),
        router,
        fast,
        verdicts_topic=s.topic(VERDICTS),
        policy=policy,
        reporter=reporter,
    )
    refused = sorted(d.value for d in validator.rejected)
    log.info(
        "uploads are refused (406) for %s; other flagged uploads are accepted and reported",
        ", ".join(refused) or "no decision",
    )
    # Closed first (cleanups run in reverse): fast-path verdicts in flight reach the bus
    # before the reply router and the bus go.
    ctx.cleanups.push_async_callback(validator.drain)
    ctx.health.add("reply routing", router.ready.is_set)
    ctx.health.add("hash lists", lambda: fast.ready)
    return create_app(
        ApiContext(
            s.api,
            validator,
            health=ctx.health,
            admin_router=admin_router,
            routers=routers,
            evidence=None
            if policy is None
            else EvidenceSender(ctx.bus, s.topic(UPLOAD_EVIDENCE), policy),
        )
    )


def http_limits(api: ApiSettings) -> HttpLimits:
    """What one client may hold of the API's server (``api.*`` connection settings)."""
    return HttpLimits(
        max_connections=api.max_connections,
        keepalive_timeout_s=api.keepalive_timeout_s,
        header_timeout_s=api.header_timeout_s,
        body_timeout_s=api.body_timeout_s,
        max_header_bytes=api.max_header_bytes,
    )


async def serve_http(
    app: FastAPI,
    host: str,
    port: int,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    *,
    limits: HttpLimits | None = None,
) -> None:
    """Serve the API until ``stop`` is set; in-flight requests finish first. ``limits``
    default to those of the default ``api`` settings."""
    await serve_app(
        app,
        host,
        port,
        stop,
        what="validate API",
        hint="PICTGUARD_API__HOST/PORT",
        started=started,
        limits=limits or http_limits(ApiSettings()),
    )
