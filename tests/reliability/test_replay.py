"""A captured B2 delivery cannot be replayed: its signature has no time in it, the event has.

Before this fix a signed B2 body was accepted for ever: replayed an hour later (or after a
restart cleared the dedupe window) it became a scan request again. Now events whose
``eventTimestamp`` is outside ``ingest.webhook.b2_max_age_s`` are refused, and an
``eventId`` already seen within it is a repeat. The clock is injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ingest.sources.b2 import SIGNATURE_HEADER, sign
from ingest.webhook import create_webhook_app
from pictguard.settings import Settings, load_settings
from pipeline.bus.base import BusError, Outgoing
from pipeline.bus.memory import MemoryBus
from pipeline.events import ScanRequest, decode
from pipeline.topics import SCAN_BULK
from tests.ingest import payloads as p

SECRET = "b2-signing-secret-0123456789"
T0 = 1_800_000_000.0  # the injected "now", in seconds


class RecordingBus(MemoryBus):
    """Keeps what was produced; refuses while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.produced: list[Outgoing] = []
        self.down = False

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        if self.down:
            raise BusError("broker unreachable (test)")
        self.produced += records
        await super().produce_many(records)


@dataclass
class Hook:
    client: httpx.AsyncClient
    bus: RecordingBus
    settings: Settings
    now: list[float]

    async def deliver(self, body: bytes) -> httpx.Response:
        return await self.client.post(
            "/hooks/b2", content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
        )

    def scanned(self) -> list[str]:
        topic = self.settings.topic(SCAN_BULK)
        requests = [decode(r.value or b"", ScanRequest) for r in self.bus.produced]
        return [
            r.object.key
            for r, o in zip(requests, self.bus.produced, strict=True)
            if o.topic == topic and r.object is not None
        ]


@pytest.fixture
async def hook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hook]:
    import os

    for name in list(os.environ):
        if name.startswith("PICTGUARD_"):
            monkeypatch.delenv(name)
    # No dedupe window: what is checked here is the replay guard's own memory.
    settings = load_settings(
        ingest={"dedupe_window_s": 0, "webhook": {"enabled": True, "b2_secret": SECRET}}
    )
    bus = RecordingBus()
    await bus.start()
    now = [T0]
    app = create_webhook_app(settings, bus, clock=lambda: now[0])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
        yield Hook(client, bus, settings, now)
    await bus.stop()


def body(key: str, event_id: str, at: float, **kw: Any) -> bytes:
    return p.b2_body(
        p.b2_event("pics", key, size=10, event_id=event_id, timestamp_ms=int(at * 1000), **kw)
    )


async def test_a_fresh_delivery_is_scanned_once_and_its_replay_is_not(hook: Hook) -> None:
    first = body("a.jpg", "ev-1", T0 - 5)
    answer = await hook.deliver(first)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    hook.now[0] = T0 + 60  # replayed a minute later: same signature, same event id
    again = await hook.deliver(first)
    assert again.status_code == 200, again.text  # B2's own retries must not loop
    assert again.json()["accepted"] == 0 and again.json()["repeats"] == 1
    assert hook.scanned() == ["a.jpg"]


async def test_a_stale_delivery_is_refused(hook: Hook) -> None:
    captured = body("old.jpg", "ev-old", T0 - 901)  # validly signed, 15 minutes old
    answer = await hook.deliver(captured)
    assert answer.status_code == 403 and "eventTimestamp" in answer.text
    ahead = await hook.deliver(body("ahead.jpg", "ev-ahead", T0 + 901))
    assert ahead.status_code == 403
    missing = json_without_timestamp()
    assert (await hook.deliver(missing)).status_code == 403
    assert hook.scanned() == []


async def test_a_mixed_delivery_keeps_only_the_fresh_events(hook: Hook) -> None:
    mixed = p.b2_body(
        p.b2_event("pics", "fresh.jpg", size=1, event_id="f", timestamp_ms=int(T0 * 1000)),
        p.b2_event("pics", "stale.jpg", size=1, event_id="s", timestamp_ms=int((T0 - 3600) * 1000)),
    )
    answer = await hook.deliver(mixed)
    assert answer.status_code == 200
    assert answer.json()["accepted"] == 1 and answer.json()["stale"] == 1
    assert hook.scanned() == ["fresh.jpg"]


async def test_an_undelivered_event_is_not_taken_for_a_replay(hook: Hook) -> None:
    delivery = body("retry.jpg", "ev-r", T0)
    hook.bus.down = True
    assert (await hook.deliver(delivery)).status_code == 503
    hook.bus.down = False
    hook.now[0] = T0 + 30  # B2 retries
    answer = await hook.deliver(delivery)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert hook.scanned() == ["retry.jpg"]


async def test_ids_are_remembered_as_long_as_their_events_count(hook: Hook) -> None:
    delivery = body("w.jpg", "ev-w", T0)
    assert (await hook.deliver(delivery)).json()["accepted"] == 1
    hook.now[0] = T0 + 899  # still inside the window: a repeat
    assert (await hook.deliver(delivery)).json()["repeats"] == 1
    hook.now[0] = T0 + 901  # outside it: stale, whatever the memory holds
    assert (await hook.deliver(delivery)).status_code == 403
    assert hook.scanned() == ["w.jpg"]


def json_without_timestamp() -> bytes:
    import json

    event = p.b2_event("pics", "nots.jpg", size=1, event_id="ev-nots")
    del event["eventTimestamp"]
    return json.dumps({"events": [event]}).encode()
