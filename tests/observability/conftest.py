"""Observability test helpers: a tiny deterministic model, images, span and metric readers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.metrics import Metrics, use_metrics


@pytest.fixture
def fresh_metrics() -> Iterator[Metrics]:
    """This test's own metrics (counters from zero), restored afterwards."""
    mine = Metrics()
    previous = use_metrics(mine)
    yield mine
    use_metrics(previous)
