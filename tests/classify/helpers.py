"""Helpers of the tests under tests/classify/ (fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from classify.engine import ClassifyEngine

EngineFactory = Callable[..., Awaitable[ClassifyEngine]]
