"""The classify stage for remote workers: the same stage, with the model run elsewhere.

Scan requests are consumed, fetched (bulk objects from storage, by this process) and
published as verdicts by :class:`classify.stage.ClassifyStage`, exactly as when classify
runs here; only the assessment differs: hash lists and the verdict cache answer first, then
the bytes wait in the :class:`~classify.remote.dispatcher.Dispatcher` for a worker's lease.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from classify.base import Assessment
from classify.cache import VerdictCache
from classify.fastpath import FastPath
from classify.hashing import sha256_hex
from classify.remote.dispatcher import Dispatcher
from classify.stage import ClassifyStage
from pipeline.events import Lane, ScanRequest

# sha256 of larger inputs runs off the event loop (hashlib releases the GIL).
_INLINE_HASH_BYTES = 1 << 20


class RemoteEvaluator:
    """Hash lists and the verdict cache in this process; models on the remote workers."""

    def __init__(self, dispatcher: Dispatcher, fast: FastPath, cache: VerdictCache) -> None:
        self.dispatcher = dispatcher
        self.fast = fast
        self.cache = cache

    @property
    def model_version(self) -> str:
        """The model version of the workers' latest answer ("remote" before the first)."""
        return self.dispatcher.model_version

    @property
    def policy_version(self) -> str:
        return self.dispatcher.policy_version

    async def evaluate(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        lane: Lane = Lane.BULK,
        request_id: str = "",
        deadline: datetime | None = None,
    ) -> Assessment:
        """Hash lists and cache, else one remote worker's answer (or an error verdict)."""
        started = time.perf_counter()
        found = await self.fast.lookup(data)
        if found is None:
            if len(data) > _INLINE_HASH_BYTES:
                sha256 = await asyncio.to_thread(sha256_hex, data)
            else:
                sha256 = sha256_hex(data)
            found = await self.dispatcher.submit(
                data,
                request_id=request_id,
                lane=lane,
                content_type=content_type,
                sha256=sha256,
                deadline=deadline,
            )
            if found.worker is not None:
                # The worker's own time on it; "total" below is the whole wait here.
                found.timings_ms["worker"] = found.timings_ms.pop("total", 0.0)
                self.fast.learn(found)
                await self.cache.put(found)  # errors are never cached
        found.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        return found


class RemoteStage(ClassifyStage):
    """:class:`ClassifyStage` whose assessments come from remote workers."""

    engine: RemoteEvaluator

    async def assess(self, request: ScanRequest, data: bytes) -> Assessment:
        return await self.engine.evaluate(
            data,
            content_type=request.content_type,
            lane=request.lane,
            request_id=request.request_id,
            deadline=request.deadline,
        )
