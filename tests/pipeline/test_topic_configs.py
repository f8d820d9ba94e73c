"""Topics that carry uploads (the sync lane) or answers (reply topics) keep them about an
hour on a real broker: short retention *and* short segments, since Kafka deletes only whole,
closed segments (without segment.ms the open one waits for the 7-day roll)."""

from __future__ import annotations

import logging

import pytest

from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.topics import (
    REPLIES,
    REPLY_TOPIC,
    SCAN_BULK,
    SCAN_SYNC,
    SHORT_RETENTION_MS,
    SYNC_MAX_BYTES,
    TOPICS,
    VERDICTS,
)
from tests.pipeline.kafka_admin import create_topic, partition_count, topic_configs
from tests.servers import Broker

HOUR_MS = str(3600 * 1000)
TEN_MINUTES_MS = str(10 * 60 * 1000)


def test_every_short_lived_topic_rolls_its_segments_well_within_its_retention() -> None:
    short = [spec for spec in (*TOPICS, REPLY_TOPIC) if spec.short_lived]
    assert {spec.name for spec in short} == {SCAN_SYNC, REPLIES}
    for spec in short:
        configs = spec.configs
        assert int(configs["retention.ms"]) == SHORT_RETENTION_MS, spec.name
        assert int(configs["segment.ms"]) * 4 <= int(configs["retention.ms"]), spec.name
        # A segment must hold the largest record batch the topic accepts.
        largest = int(configs.get("max.message.bytes", 1024 * 1024))
        assert int(configs["segment.bytes"]) >= largest, spec.name


async def test_topics_create_sets_retention_and_segments_on_the_broker(
    broker: Broker, topic_prefix: str
) -> None:
    settings = broker.settings(topic_prefix=topic_prefix, partitions=2)
    created = await create_topics(settings)
    assert set(created) == {topic_prefix + t.name for t in TOPICS}

    configs = await topic_configs(
        broker.bootstrap, [topic_prefix + SCAN_SYNC, topic_prefix + SCAN_BULK]
    )
    sync = configs[topic_prefix + SCAN_SYNC]
    assert sync["retention.ms"] == HOUR_MS
    assert sync["segment.ms"] == TEN_MINUTES_MS
    assert sync["segment.bytes"] == str(2 * SYNC_MAX_BYTES)
    assert sync["max.message.bytes"] == str(SYNC_MAX_BYTES)
    # The bulk lane carries references, not bytes: the configured retention, broker segments.
    bulk = configs[topic_prefix + SCAN_BULK]
    assert bulk["retention.ms"] == str(settings.retention_ms)
    assert bulk.get("segment.ms") != TEN_MINUTES_MS


async def test_a_reply_topic_made_at_api_start_keeps_answers_an_hour(
    broker: Broker, topic_prefix: str
) -> None:
    bus = KafkaBus(broker.settings(topic_prefix=topic_prefix))
    reply = f"{topic_prefix}{REPLIES}replica-1"
    await bus.ensure_topics([reply])  # what the API's reply router does at start

    configs = (await topic_configs(broker.bootstrap, [reply]))[reply]
    assert configs["retention.ms"] == HOUR_MS
    assert configs["segment.ms"] == TEN_MINUTES_MS
    assert int(configs["segment.bytes"]) <= 16 * 1024 * 1024
    assert await partition_count(broker.bootstrap, reply) == 1


async def test_topics_create_tells_how_to_fix_an_older_sync_topic(
    broker: Broker, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync topic made before segment.ms existed keeps uploads for days: say so, with the
    command that fixes it (creation skips existing topics)."""
    settings = broker.settings(topic_prefix=topic_prefix)
    sync = topic_prefix + SCAN_SYNC
    await create_topic(broker.bootstrap, sync, {"retention.ms": HOUR_MS})  # as before

    with caplog.at_level(logging.WARNING, logger="pipeline.bus.kafka"):
        await create_topics(settings)
    (warning,) = [r.getMessage() for r in caplog.records if sync in r.getMessage()]
    assert "segment.ms=broker default" in warning
    assert (
        f"--entity-name {sync} --add-config retention.ms={HOUR_MS},"
        f"segment.ms={TEN_MINUTES_MS},segment.bytes={2 * SYNC_MAX_BYTES}"
    ) in warning

    # Topics made by this pictguard raise no warning.
    caplog.clear()
    fresh = broker.settings(topic_prefix=topic_prefix + "new.")
    await create_topics(fresh)
    with caplog.at_level(logging.WARNING, logger="pipeline.bus.kafka"):
        await create_topics(fresh, [fresh.topic_prefix + SCAN_SYNC, fresh.topic_prefix + VERDICTS])
    assert [r for r in caplog.records if "keeps its records longer" in r.getMessage()] == []
