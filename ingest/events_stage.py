"""The stage that reads the raw ``bucket-events`` topic (MinIO and Ceph Kafka targets).

Each poll's messages go through one :class:`~ingest.intake.Intake` call: their scan requests
and dead-letter records are produced together, and :func:`pipeline.stage.consume` commits the
offsets only after the bus acknowledged them. A message that is not a notification is
dead-lettered with the reason; the stage never stops on one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ingest.dedupe import DedupeWindow
from ingest.intake import Intake, Payload
from ingest.settings import IngestConfig
from ingest.sources import normalizer
from pipeline.bus.base import Bus, Message
from pipeline.events import Source
from pipeline.stage import consume
from pipeline.storage.locations import Scope
from pipeline.topics import BUCKET_EVENTS

log = logging.getLogger(__name__)

GROUP = "ingest-events"


class EventsStage:
    """Batch handler: raw notifications in, scan requests and dead letters out."""

    def __init__(
        self,
        settings: IngestConfig,
        bus: Bus,
        *,
        dedupe: DedupeWindow | None = None,
        scope: Scope | None = None,
    ) -> None:
        self.intake = Intake(
            settings,
            bus,
            normalizer=normalizer(settings.ingest.events.format),
            source=Source.EVENT,
            dedupe=dedupe,
            scope=scope,
        )
        self.produced = 0  # scan requests acknowledged since start

    async def handle(self, batch: Sequence[Message]) -> None:
        payloads = [
            Payload(
                body=m.value,
                origin=m.topic,
                message_key=m.key,
                partition=m.partition,
                offset=m.offset,
            )
            for m in batch
        ]
        outcomes = await self.intake.submit(payloads)
        self.produced += sum(o.produced for o in outcomes)


async def run_events_stage(
    settings: IngestConfig,
    bus: Bus,
    stop: asyncio.Event,
    *,
    dedupe: DedupeWindow | None = None,
    started: asyncio.Event | None = None,
    scope: Scope | None = None,
) -> None:
    """Consume ``bucket-events`` as group ``<group_prefix>ingest-events`` until ``stop``."""
    topic = settings.topic(BUCKET_EVENTS)
    log.info("reading bucket notifications from %s", topic, extra={"topic": topic})
    await consume(
        bus,
        [topic],
        settings.group(GROUP),
        EventsStage(settings, bus, dedupe=dedupe, scope=scope),
        stop,
        max_records=settings.ingest.events.max_batch,
        started=started,
    )
