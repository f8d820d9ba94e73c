"""The seam between the classify stage (bus, storage) and the classification engine."""

from __future__ import annotations

from pipeline.events import Findings
from pipeline.state.shared import SharedTables


class Assessment(Findings):
    """Everything the engine concluded about one image; the stage wraps it in a Verdict."""


# State the engine reads and writes: hash lists and the verdict cache.
ClassifyTables = SharedTables
