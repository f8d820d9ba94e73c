"""The seam between the classify stage (bus, storage) and the classification engine."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pipeline.events import Findings, Lane
from pipeline.state.shared import SharedTables


class Assessment(Findings):
    """Everything the engine concluded about one image; the stage wraps it in a Verdict."""


# State the engine reads and writes: hash lists and the verdict cache.
ClassifyTables = SharedTables


class Evaluator(Protocol):
    """What the classify stage asks for an assessment: the engine in this process, or the
    remote workers (``classify.remote``)."""

    @property
    def model_version(self) -> str: ...

    @property
    def policy_version(self) -> str: ...

    async def evaluate(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        lane: Lane = Lane.BULK,
        deadline: datetime | None = None,
    ) -> Assessment:
        """The assessment of one image, animation or video; bad input gives
        ``Decision.ERROR``, never raises. ``deadline``: when the answer is due."""
        ...
