"""The classify stage: scan requests in, verdicts out.

It fetches the object (or takes the inline bytes of a sync request), asks the engine for an
assessment and publishes one verdict per request. Requests of a batch run concurrently so
the engine's batcher can group their images into one model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from classify.base import Assessment, Evaluator
from classify.settings import ClassifyConfig
from pipeline import metrics
from pipeline.bus.base import Bus, BusError, Message, Outgoing
from pipeline.events import (
    Decision,
    ErrorReason,
    Lane,
    ScanRequest,
    Verdict,
    encode,
    utcnow,
)
from pipeline.stage import decode_or_dead_letter
from pipeline.storage import (
    AccessDenied,
    ObjectMissing,
    ObjectTooLarge,
    StorageError,
)
from pipeline.storage.locations import Stores
from pipeline.topics import DEAD_LETTER, VERDICTS
from pipeline.tracing import consuming, inject_headers, span

log = logging.getLogger(__name__)

# A sync reply is useless once the API's deadline (at most ~10 s) has passed.
REPLY_TIMEOUT_S = 10.0


class ClassifyStage:
    """Consumes ``scan-requests.*``; produces ``verdicts`` (and replies for sync requests)."""

    def __init__(
        self,
        bus: Bus,
        settings: ClassifyConfig,
        stores: Stores,
        engine: Evaluator,
        *,
        concurrency: Mapping[Lane, int] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.stores = stores
        self.engine = engine
        # Each lane has its own slots: bulk scans waiting on slow object GETs must never
        # hold an upload (the sync lane) out of the engine.
        slots = {
            Lane.BULK: settings.classify.concurrency,
            Lane.SYNC: settings.classify.sync_concurrency,
            **(concurrency or {}),
        }
        self._slots = {lane: asyncio.Semaphore(n) for lane, n in slots.items()}
        self._verdicts = settings.topic(VERDICTS)
        self._dead_letter = settings.topic(DEAD_LETTER)

    async def handle(self, batch: Sequence[Message]) -> None:
        requests: list[tuple[Message, ScanRequest]] = []
        for message in batch:
            request = await decode_or_dead_letter(
                self.bus, self._dead_letter, message, ScanRequest, stage="classify"
            )
            if request is not None:
                requests.append((message, request))
        await asyncio.gather(*(self._scan_and_publish(m, r) for m, r in requests))

    async def _scan_and_publish(self, message: Message, request: ScanRequest) -> None:
        """Publish each verdict as soon as it is ready: an upload's answer never waits for
        its batch-mates. The batch is committed only after every one is acknowledged."""
        verdict, headers = await self._scan(message, request)
        value = encode(verdict)
        key = verdict.key.encode()
        if request.reply_to:
            await self._reply([Outgoing(request.reply_to, value, key, headers)])
        await self.bus.produce_many([Outgoing(self._verdicts, value, key, headers)])
        metrics.record_verdict(verdict, request.created_at, utcnow())

    async def _reply(self, replies: list[Outgoing]) -> None:
        """Best effort: the verdict is already in ``verdicts``; an API replica that went
        away (its reply topic deleted) must not stop classification."""
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):  # no task of its own, unlike wait_for
                await self.bus.produce_many(replies)
        except (BusError, TimeoutError) as exc:
            log.warning("could not deliver %d sync replies: %s", len(replies), exc)

    async def _scan(self, message: Message, request: ScanRequest) -> tuple[Verdict, dict[str, str]]:
        """The verdict, and the headers that make its record a child of this scan's span."""
        async with self._slots[request.lane]:
            lane = {"pictguard.lane": request.lane.value}
            with consuming(message, self.bus.system, lane) as current:
                started = time.perf_counter()
                if request.deadline is not None and request.deadline < utcnow():
                    # The API has already answered per its timeout policy; save the work.
                    failure: Assessment | None = self._error(
                        ErrorReason.TIMEOUT, "deadline passed before classification"
                    )
                    data = None
                else:
                    with span("classify.fetch", attributes=_fetch_attributes(request)):
                        data, failure = await self._fetch(request)
                fetch_ms = (time.perf_counter() - started) * 1000
                if failure is not None:
                    assessment = failure
                else:
                    assert data is not None
                    assessment = await self.assess(request, data)
                assessment.timings_ms.setdefault("fetch", round(fetch_ms, 3))
                verdict = Verdict(
                    request_id=request.request_id,
                    lane=request.lane,
                    source=request.source,
                    object=request.object,
                    **dict(assessment),
                )
                current.set_attribute("pictguard.decision", verdict.decision.value)
                if verdict.reason is not None:
                    current.set_attribute("pictguard.error", verdict.reason.value)
                return verdict, inject_headers()

    async def assess(self, request: ScanRequest, data: bytes) -> Assessment:
        """The assessment of ``request``'s bytes (a subclass may ask remote workers)."""
        return await self.engine.evaluate(
            data, content_type=request.content_type, lane=request.lane, deadline=request.deadline
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


def _fetch_attributes(request: ScanRequest) -> dict[str, str | bool]:
    # Where the bytes come from, never the bytes.
    if request.object is not None:
        return {"pictguard.object": request.object.id, "pictguard.inline": False}
    return {"pictguard.inline": request.content is not None}
