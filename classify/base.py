"""The seam between the classify stage (bus, storage) and the classification engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.events import Decision, ErrorReason
from pipeline.state.table import Table


@dataclass(slots=True)
class Assessment:
    """Everything the engine concluded about one image; the stage wraps it in a Verdict."""

    decision: Decision
    reason: ErrorReason | None = None
    detail: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    matched: str | None = None
    classifiers: list[str] = field(default_factory=list)
    model_version: str = ""
    policy_version: str = ""
    cached: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ClassifyTables:
    """State the engine reads and writes: hash lists and the verdict cache."""

    hashlists: Table
    verdict_cache: Table
