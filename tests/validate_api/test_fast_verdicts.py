"""The verdict of a fast-path answer is published beside the answer and survives a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from classify.engine import ClassifyEngine
from classify.fastpath import FastPath
from classify.hashing import sha256_hex
from classify.hashlists import HashLists
from classify.settings import ClassifySettings
from pipeline.bus.base import Outgoing
from pipeline.bus.memory import MemoryBus
from pipeline.events import Decision, Lane, Source, Verdict, decode
from pipeline.state.shared import SharedTables
from pipeline.state.sqlite import SqliteState
from tests.media import photo_jpeg
from validate_api.replies import ReplyRouter
from validate_api.service import Validator
from validate_api.settings import ApiSettings

VERDICTS = "t.verdicts"


class SlowVerdicts(MemoryBus):
    """An in-process bus whose broker is slow to acknowledge ``verdicts`` until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        if any(r.topic == VERDICTS for r in records):
            await self.release.wait()
        await super().produce_many(records)


async def test_the_answer_does_not_wait_for_the_record_and_stopping_does(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.start()
    tables = SharedTables(state.table("hashlists"), state.table("verdict-cache"))
    await tables.start()
    bad = photo_jpeg(31, 640, 480)
    await HashLists(tables.hashlists).add(
        sha256=sha256_hex(bad), list="block", reason="report #31", author="mod"
    )
    engine = ClassifyEngine(ClassifySettings(classifiers=["hashlist"]), tables)
    await engine.start()
    bus = SlowVerdicts()
    tap = bus.consumer([VERDICTS], "tap")
    await tap.start()
    validator = Validator(
        ApiSettings(),
        bus,
        "t.scan-requests.sync",
        ReplyRouter(bus, "t.replies.x", "api-x"),
        FastPath(engine),
        verdicts_topic=VERDICTS,
    )
    try:
        outcome = await validator.validate(bad, "image/jpeg")
        # Answered while the broker still holds the record back.
        assert (outcome.accepted, outcome.decision, outcome.path) == (
            False,
            Decision.FLAG_CSAM,
            "fast",
        )
        assert validator.publishing == 1 and not await tap.getmany(0, 10)

        stopping = asyncio.create_task(validator.drain())
        await asyncio.sleep(0)  # the stop is under way...
        assert not stopping.done()  # ...and waits for the record
        bus.release.set()
        await stopping
        [message] = await tap.getmany(0, 10)
    finally:
        await engine.stop()
        await tables.stop()
        await state.stop()
    verdict = decode(message.value, Verdict)
    assert verdict.verdict_id == outcome.verdict["verdict_id"]
    assert (verdict.decision, verdict.lane, verdict.source) == (
        Decision.FLAG_CSAM,
        Lane.SYNC,
        Source.API,
    )
    assert verdict.matched == "blocklist:sha256" and verdict.object is None
