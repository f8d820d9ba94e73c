"""Fixtures for the ingest tests: settings for the session's broker and S3 server, helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pictguard.settings import Settings
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.topics import BUCKET_EVENTS, DEAD_LETTER, SCAN_BULK, VERDICTS
from tests.ingest.helpers import (
    make_settings,
)
from tests.servers import Broker, S3Server


@pytest.fixture
def settings(broker: Broker, s3_server: S3Server, topic_prefix: str, tmp_path: Path) -> Settings:
    return make_settings(broker, s3_server, topic_prefix, tmp_path)


@pytest.fixture
async def kafka_bus(settings: Settings) -> AsyncIterator[KafkaBus]:
    names = [settings.topic(t) for t in (BUCKET_EVENTS, SCAN_BULK, DEAD_LETTER, VERDICTS)]
    await create_topics(settings.kafka, names)
    bus = KafkaBus(settings.kafka)
    await bus.start()
    yield bus
    await bus.stop()
