"""The verdict cache: the last verdict per content sha256, in the ``verdict_cache`` table.

A cached verdict counts only for the model and policy versions that produced it, so
upgrading a model or editing the policy re-scans content on its next appearance. A
hash-list-only engine caches its verdicts too, under model version ``none``: a repeated
upload then costs its sha256 and the lookups, not a decode. Error verdicts are never
cached (the next attempt may succeed), and neither are list matches (the lists are checked
before the cache and may change; the engine checks a cached verdict's PDQ against them).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from pydantic import BaseModel, Field, ValidationError

from classify.base import Assessment
from pipeline.events import Decision, MediaSummary, utcnow
from pipeline.state.table import Table

log = logging.getLogger(__name__)


class CachedVerdict(BaseModel):
    """What the cache keeps of an assessment."""

    decision: Decision
    model_version: str
    policy_version: str
    pdq: str | None = None
    pdq_quality: int | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    classifiers: list[str] = Field(default_factory=list)
    media: MediaSummary | None = None  # videos and animations: frames sampled and flagged
    created_at: datetime = Field(default_factory=utcnow)


class VerdictCache:
    """Get and put verdicts by sha256.

    :meth:`remember` writes beside the caller (an upload's answer never waits for the
    state store's writer); what it has not written yet is read from memory meanwhile.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self._unwritten: dict[str, bytes] = {}
        self._writing: set[asyncio.Task[None]] = set()

    async def get(self, sha256: str, model_version: str, policy_version: str) -> Assessment | None:
        """The cached assessment for this content and versions, or None."""
        found = await self.get_dated(sha256, model_version, policy_version)
        return None if found is None else found[0]

    async def get_dated(
        self, sha256: str, model_version: str, policy_version: str
    ) -> tuple[Assessment, datetime] | None:
        """:meth:`get`, and when that verdict was made."""
        value = self._unwritten.get(sha256)
        if value is None:
            value = await self.table.get(sha256)
        if value is None:
            return None
        try:
            cached = CachedVerdict.model_validate_json(value)
        except ValidationError:
            log.warning("ignoring unreadable verdict cache entry", extra={"sha256": sha256})
            return None
        if cached.model_version != model_version or cached.policy_version != policy_version:
            return None
        assessment = Assessment(
            decision=cached.decision,
            sha256=sha256,
            pdq=cached.pdq,
            pdq_quality=cached.pdq_quality,
            scores=dict(cached.scores),
            labels=list(cached.labels),
            classifiers=list(cached.classifiers),
            model_version=cached.model_version,
            policy_version=cached.policy_version,
            media=cached.media,
            cached=True,
        )
        return assessment, cached.created_at

    async def put(self, assessment: Assessment) -> None:
        """Remember a verdict (errors, list matches and unhashed assessments are skipped)."""
        entry = _entry(assessment)
        if entry is not None:
            await self.table.put(*entry)

    def remember(self, assessment: Assessment) -> None:
        """:meth:`put` in the background; :meth:`drain` waits for what is in flight."""
        entry = _entry(assessment)
        if entry is None:
            return
        self._unwritten[entry[0]] = entry[1]
        task = asyncio.create_task(self._write(*entry), name="verdict-cache-put")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, sha256: str, value: bytes) -> None:
        try:
            await self.table.put(sha256, value)
        except Exception as exc:  # noqa: BLE001 — a lost entry costs one classification
            log.warning("could not write a verdict cache entry: %s", exc)
        finally:
            if self._unwritten.get(sha256) is value:
                del self._unwritten[sha256]

    async def drain(self) -> None:
        """Wait for the writes :meth:`remember` started."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


def _entry(assessment: Assessment) -> tuple[str, bytes] | None:
    if (
        assessment.decision is Decision.ERROR
        or assessment.sha256 is None
        or assessment.matched is not None
    ):
        return None
    cached = CachedVerdict(
        decision=assessment.decision,
        model_version=assessment.model_version,
        policy_version=assessment.policy_version,
        pdq=assessment.pdq,
        pdq_quality=assessment.pdq_quality,
        scores=assessment.scores,
        labels=assessment.labels,
        classifiers=assessment.classifiers,
        media=assessment.media,
    )
    return assessment.sha256, cached.model_dump_json(exclude_none=True).encode()
