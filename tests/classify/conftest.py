"""Fixtures of the classify tests: a real SQLite state file and engine factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from classify.base import ClassifyTables
from classify.engine import ClassifyEngine
from classify.settings import ClassifySettings
from pipeline.state.sqlite import SqliteState
from tests.classify.helpers import EngineFactory


@pytest_asyncio.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteState]:
    store = SqliteState(tmp_path / "pictguard.sqlite3")
    await store.start()
    yield store
    await store.stop()


@pytest.fixture
def tables(state: SqliteState) -> ClassifyTables:
    return ClassifyTables(state.table("hashlists"), state.table("verdict_cache"))


@pytest_asyncio.fixture
async def make_engine(tables: ClassifyTables) -> AsyncIterator[EngineFactory]:
    """``await make_engine(classifiers=[...], ...)``: a started engine, stopped afterwards."""
    engines: list[ClassifyEngine] = []

    async def factory(settings: ClassifySettings | None = None, **fields: Any) -> ClassifyEngine:
        engine = ClassifyEngine(settings or ClassifySettings(**fields), tables)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.stop()
