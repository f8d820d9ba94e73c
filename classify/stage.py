"""The classify stage: scan requests in, verdicts out.

It fetches the object (or takes the inline bytes of a sync request), asks the engine for an
assessment and publishes one verdict per request. Requests of a batch run concurrently so
the engine's batcher can group their images into one model call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from classify.base import Assessment
from classify.engine import ClassifyEngine
from pipeline.bus.base import Bus, Message, Outgoing
from pipeline.events import (
    Decision,
    ErrorReason,
    ScanRequest,
    Verdict,
    encode,
)
from pipeline.settings import Settings
from pipeline.stage import decode_or_dead_letter
from pipeline.storage import (
    AccessDenied,
    ObjectMissing,
    ObjectTooLarge,
    StorageError,
)
from pipeline.storage.locations import Stores
from pipeline.topics import DEAD_LETTER, VERDICTS
from pipeline.tracing import continued, inject_headers, tracer

log = logging.getLogger(__name__)


class ClassifyStage:
    """Consumes ``scan-requests.*``; produces ``verdicts`` (and replies for sync requests)."""

    def __init__(
        self, bus: Bus, settings: Settings, stores: Stores, engine: ClassifyEngine
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.stores = stores
        self.engine = engine
        self._slots = asyncio.Semaphore(settings.classify.concurrency)
        self._verdicts = settings.topic(VERDICTS)
        self._dead_letter = settings.topic(DEAD_LETTER)

    async def handle(self, batch: Sequence[Message]) -> None:
        requests: list[tuple[Message, ScanRequest]] = []
        for message in batch:
            request = await decode_or_dead_letter(self.bus, self._dead_letter, message, ScanRequest)
            if request is not None:
                requests.append((message, request))
        verdicts = await asyncio.gather(*(self._scan(m, r) for m, r in requests))
        records: list[Outgoing] = []
        for (message, request), verdict in zip(requests, verdicts, strict=True):
            with continued(message.headers):
                headers = inject_headers()
            value = encode(verdict)
            key = verdict.key.encode()
            records.append(Outgoing(self._verdicts, value, key, headers))
            if request.reply_to:
                records.append(Outgoing(request.reply_to, value, key, headers))
        await self.bus.produce_many(records)

    async def _scan(self, message: Message, request: ScanRequest) -> Verdict:
        async with self._slots:
            with continued(message.headers), tracer.start_as_current_span("classify.scan"):
                started = time.perf_counter()
                data, failure = await self._fetch(request)
                fetch_ms = (time.perf_counter() - started) * 1000
                if failure is not None:
                    assessment = failure
                else:
                    assert data is not None
                    assessment = await self.engine.evaluate(
                        data, content_type=request.content_type, lane=request.lane
                    )
                assessment.timings_ms.setdefault("fetch", round(fetch_ms, 3))
                return Verdict(
                    request_id=request.request_id,
                    lane=request.lane,
                    source=request.source,
                    object=request.object,
                    **dataclasses.asdict(assessment),
                )

    async def _fetch(self, request: ScanRequest) -> tuple[bytes | None, Assessment | None]:
        """The request's bytes, or the error assessment explaining why there are none."""
        if request.content is not None:
            return request.content, None
        if request.object is None:
            return None, self._error(ErrorReason.EMPTY, "request carries neither bytes nor object")
        ref = request.object
        try:
            store = self.stores.for_ref(ref)
            data = await store.get(
                ref.key, self.settings.classify.max_object_bytes, version_id=ref.version_id
            )
        except ObjectTooLarge as exc:
            return None, self._error(ErrorReason.OBJECT_TOO_BIG, str(exc))
        except ObjectMissing as exc:
            return None, self._error(ErrorReason.NOT_FOUND, str(exc))
        except AccessDenied as exc:
            log.error("cannot read %s: %s", ref.id, exc)
            return None, self._error(ErrorReason.FETCH_FAILED, str(exc))
        except StorageError as exc:
            log.warning("fetching %s failed after retries: %s", ref.id, exc)
            return None, self._error(ErrorReason.FETCH_FAILED, str(exc))
        return data, None

    def _error(self, reason: ErrorReason, detail: str) -> Assessment:
        return Assessment(
            decision=Decision.ERROR,
            reason=reason,
            detail=detail,
            model_version=self.engine.model_version,
            policy_version=self.engine.policy_version,
        )
