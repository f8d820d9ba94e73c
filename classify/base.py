"""The seam between the classify stage (bus, storage) and the classification engine."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.events import Findings
from pipeline.state.table import Table


class Assessment(Findings):
    """Everything the engine concluded about one image; the stage wraps it in a Verdict."""


@dataclass(slots=True)
class ClassifyTables:
    """State the engine reads and writes: hash lists and the verdict cache."""

    hashlists: Table
    verdict_cache: Table
