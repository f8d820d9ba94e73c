"""Single-process test helpers: settings for a scan against the test S3 server, and a
blocklist written straight into the state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classify.hashlists import HashLists
from pictguard.settings import Settings, load_settings
from pipeline.state.sqlite import SqliteState
from pipeline.topics import HASHLISTS
from tests.corpus import Corpus
from tests.servers import S3Server


def scan_settings(s3: S3Server, state_dir: Path, **enforce: Any) -> Settings:
    return load_settings(
        s3={
            "endpoint_url": s3.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
        storage={"state_dir": str(state_dir)},
        classify={"classifiers": ["hashlist"]},
        enforce=enforce,
    )


async def block(settings: Settings, corpus: Corpus) -> None:
    state = SqliteState(settings.storage.state_file)
    await state.start()
    try:
        lists = HashLists(state.table(HASHLISTS))
        await lists.start()
        for key in corpus.blocked:
            await lists.add(sha256=corpus.sha256(key), list="block", reason="test", author="t")
    finally:
        await state.stop()
