"""Each test reads metrics of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.metrics import Metrics, use_metrics


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[Metrics]:
    mine = Metrics()
    previous = use_metrics(mine)
    yield mine
    use_metrics(previous)
