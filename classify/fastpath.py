"""The upload fast path: hash lists and the verdict cache, without a model run."""

from __future__ import annotations

from classify.base import Assessment
from classify.cache import VerdictCache
from classify.engine import ClassifyEngine
from classify.hashing import sha256_hex
from pipeline.events import Decision, Findings


class FastPath:
    """Hash lists (exact and PDQ-near) and the verdict cache, without a model run.

    Single process: the classify engine itself answers. Distributed: a hash-list-only
    engine answers for the lists, and the verdict cache is read with the model and policy
    versions learnt from the verdicts classify sends back, so an upgraded model is never
    answered from stale entries.
    """

    def __init__(self, engine: ClassifyEngine, cache: VerdictCache | None = None) -> None:
        self.engine = engine
        self.cache = cache
        self._versions: tuple[str, str] | None = None

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def learn(self, verdict: Findings) -> None:
        if verdict.decision is not Decision.ERROR and verdict.model_version and not verdict.matched:
            self._versions = (verdict.model_version, verdict.policy_version)

    async def lookup(self, data: bytes) -> Assessment | None:
        found = await self.engine.lookup_fast(data)
        if found is not None or self.cache is None or self._versions is None:
            return found
        return await self.cache.get(sha256_hex(data), *self._versions)
