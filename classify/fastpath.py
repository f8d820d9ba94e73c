"""The upload fast path: hash lists and the verdict cache, without a model run."""

from __future__ import annotations

from classify.base import Assessment
from classify.engine import ClassifyEngine
from pipeline import mediatype
from pipeline.events import Decision, Findings, Lane


class FastPath:
    """Hash lists (exact and PDQ-near) and the verdict cache, without a model run.

    Cheapest first: sha256 → exact list entry → verdict cache (no decode: a repeated image
    costs a hash and two lookups) → decode + PDQ-near entry.

    ``local``: a miss is classified by this same engine (``pictguard serve``). A hash-list
    only engine then answers everything here — its verdict is final, decoded once and
    cached — and an engine with models skips the PDQ decode here, since its own
    evaluation checks PDQ before any model (one decode per upload, not two).

    ``elsewhere``: classify runs in other processes (distributed, or remote workers). A
    hash-list-only engine answers for the lists, and the verdict cache is read with the
    model and policy versions learnt from the verdicts classify sends back, so an upgraded
    model is never answered from stale entries.
    """

    def __init__(
        self, engine: ClassifyEngine, *, local: bool = False, elsewhere: bool = False
    ) -> None:
        self.engine = engine
        self.local = local
        self.elsewhere = elsewhere
        self._versions: tuple[str, str] | None = None

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def learn(self, verdict: Findings) -> None:
        if verdict.decision is not Decision.ERROR and verdict.model_version and not verdict.matched:
            self._versions = (verdict.model_version, verdict.policy_version)

    async def lookup(
        self, data: bytes, timings: dict[str, float] | None = None
    ) -> Assessment | None:
        """The assessment if known without a model run, else None; ``timings`` receives
        the time of each step."""
        if self.local and not self.engine.models and not mediatype.is_video(mediatype.sniff(data)):
            # (A video goes the sync lane's way: it is sampled to fit the answer's deadline.)
            found = await self.engine.evaluate(data, lane=Lane.SYNC)
            if timings is not None:
                timings.update(found.timings_ms)
            return found
        if self.elsewhere and self._versions is None:
            # Nothing learnt yet: never read the cache under versions of our own.
            return await self.engine.lookup_fast(
                data, pdq=not self.local, cache=False, timings=timings
            )
        return await self.engine.lookup_fast(
            data,
            pdq=not self.local,
            versions=self._versions if self.elsewhere else None,
            timings=timings,
        )
