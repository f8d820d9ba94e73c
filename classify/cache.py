"""The verdict cache: the last model verdict per content sha256, in the ``verdict_cache`` table.

A cached verdict counts only for the model and policy versions that produced it, so
upgrading a model or editing the policy re-scans content on its next appearance. Error
verdicts are never cached (the next attempt may succeed), and neither are hash-list
verdicts (the lists are checked before the cache anyway and may change).
"""

from __future__ import annotations

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
    """Get and put model verdicts by sha256."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def get(self, sha256: str, model_version: str, policy_version: str) -> Assessment | None:
        """The cached assessment for this content and versions, or None."""
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
        return Assessment(
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

    async def put(self, assessment: Assessment) -> None:
        """Remember a model verdict (errors and unhashed assessments are skipped)."""
        if assessment.decision is Decision.ERROR or assessment.sha256 is None:
            return
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
        await self.table.put(assessment.sha256, cached.model_dump_json(exclude_none=True).encode())
