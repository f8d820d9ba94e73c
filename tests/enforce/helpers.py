"""Helpers of the tests under tests/enforce/ (fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from pictguard.settings import Settings
from pipeline.bus.base import Consumer
from pipeline.bus.memory import MemoryBus
from pipeline.events import (
    Decision,
    EnforcementAction,
    ObjectRef,
    StoreKind,
    Verdict,
    decode,
)
from pipeline.topics import ACTIONS
from tests.servers import S3Server


def make_settings(
    s3_server: S3Server,
    tmp_path: Path,
    prefix: str,
    *,
    storage: dict[str, Any] | None = None,
    **enforce: Any,
) -> Settings:
    """Settings pointing at the moto server and a private state folder."""
    return Settings(
        kafka={"topic_prefix": prefix},
        s3={
            "endpoint_url": s3_server.endpoint,
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
            "path_style": True,
        },
        storage={"state_dir": tmp_path / "state", **(storage or {})},
        enforce=enforce,
    )


def verdict_for(
    bucket: str,
    key: str,
    decision: Decision = Decision.FLAG_CSAM,
    data: bytes | None = None,
    **fields: Any,
) -> Verdict:
    """A verdict as classify would send it for ``s3://bucket/key``."""
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    return Verdict(
        request_id=fields.pop("request_id", uuid.uuid4().hex),
        object=ObjectRef(store=StoreKind.S3, bucket=bucket, key=key),
        decision=decision,
        sha256=fields.pop("sha256", sha),
        scores=fields.pop("scores", {"csam": 0.91, "nsfw": 0.97}),
        **fields,
    )


def exists(s3: Any, bucket: str, key: str) -> bool:
    response = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    return any(item["Key"] == key for item in response.get("Contents", []))


class ActionTap:
    """Reads what enforce produced on the actions topic of a :class:`MemoryBus`."""

    def __init__(self, bus: MemoryBus, settings: Settings) -> None:
        self.consumer: Consumer = bus.consumer([settings.topic(ACTIONS)], "tap")

    async def start(self) -> None:
        await self.consumer.start()

    async def take(self) -> list[EnforcementAction]:
        messages = await self.consumer.getmany(0, 10_000)
        return [decode(m.value, EnforcementAction) for m in messages]


async def enforce_verdicts(settings: Settings, *verdicts: Verdict) -> None:
    """Run the enforce stage over ``verdicts`` as `pictguard serve` would, then stop it."""
    from enforce.stage import EnforceStage
    from pipeline.bus.base import Message
    from pipeline.events import encode
    from pipeline.state.sqlite import SqliteState
    from pipeline.storage.locations import Stores
    from pipeline.topics import VERDICTS

    state = SqliteState(settings.storage.state_file)
    await state.start()
    stores = Stores(settings.s3)
    stage = EnforceStage(MemoryBus(), settings, stores, state)
    await stage.start()
    await stage.handle(
        [Message(settings.topic(VERDICTS), encode(v), v.key.encode()) for v in verdicts]
    )
    await stage.stop()
    await stores.close()
    await state.stop()
