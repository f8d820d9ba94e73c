"""Two pictguard instances on loopback: A publishes its hash lists as a signed feed served
over HTTP from a folder, B subscribes and acts on them within one interval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from classify.engine import ClassifyEngine
from classify.feeds import role as feeds_role
from pictguard.runtime import open_runtime
from pictguard.settings import load_settings
from pipeline.context import Mode
from pipeline.events import Decision
from tests.classify import images
from tests.classify.feeds.helpers import (
    Instance,
    ManualClock,
    StaticHost,
    eventually,
    instance,
)
from tests.colour_model import ColourModel  # noqa: F401 — registers the "colour" classifier
from tests.media import near_duplicates, photo_jpeg

PHOTO = photo_jpeg(5100, 800, 600)
# The colour model calls a magenta image CSAM: B's models flag it on their own.
MAGENTA = images.encode(Image.new("RGB", (64, 64), (255, 0, 255)), "PNG")


@dataclass
class Subscriber:
    engine: ClassifyEngine
    clock: ManualClock


@asynccontextmanager
async def running(node: Instance) -> AsyncIterator[Subscriber]:
    """Instance B as ``pictguard serve`` runs it: the engine and the feeds loop, on one
    hash-list table, the loop's interval turned by hand."""
    settings = load_settings(node.config)
    clock = ManualClock()
    async with open_runtime(settings, mode=Mode.SINGLE) as rt:
        await rt.start_tables()
        engine = ClassifyEngine(settings.classify, rt.tables)
        await engine.start()
        (loop,) = await feeds_role.tasks(rt, wait=clock.wait)
        task = asyncio.create_task(loop)
        try:
            await clock.pulled(1)  # the pull every start makes
            yield Subscriber(engine, clock)
        finally:
            clock.stop()
            await asyncio.wait_for(task, 30)
            await engine.stop()
            await rt.aclose()


async def setup(tmp_path: Path, trust: str = "block") -> tuple[Instance, Instance, StaticHost]:
    www = tmp_path / "www"
    a = instance(
        tmp_path,
        "a",
        feeds={
            "name": "instance-a.example",
            "key_file": str(tmp_path / "a" / "feed.key"),
            "publish_to": str(www / "a"),
        },
    )
    b = instance(tmp_path, "b", classifiers=["hashlist", "colour"])
    keygen = await a.cli("feeds", "keygen", str(tmp_path / "a" / "feed.key"))
    assert keygen.exit_code == 0, keygen.output
    public = keygen.output.strip().splitlines()[-1]
    www.mkdir()
    host = StaticHost(www).start()
    subscribed = await b.cli(
        "feeds",
        "subscribe",
        host.url_of("a/feed.jsonl"),
        "--key",
        public,
        "--trust",
        trust,
        "--name",
        "instance-a.example",
    )
    assert subscribed.exit_code == 0, subscribed.output
    return a, b, host


async def test_a_block_allow_and_removal_on_a_act_on_b_within_one_interval(
    tmp_path: Path,
) -> None:
    a, b, host = await setup(tmp_path)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    magenta = tmp_path / "magenta.png"
    magenta.write_bytes(MAGENTA)
    copies = near_duplicates(PHOTO, seed=1)
    try:
        async with running(b) as node:
            assert (await node.engine.evaluate(PHOTO)).decision is Decision.ALLOW
            assert (await node.engine.evaluate(MAGENTA)).decision is Decision.FLAG_CSAM

            # A blocks the photo and allows the magenta image (a false positive there).
            assert (
                await a.cli("hashes", "add", "--block", str(photo), "--reason", "r 7")
            ).exit_code == 0
            assert (await a.cli("hashes", "add", "--allow", str(magenta))).exit_code == 0
            published = await a.cli("feeds", "publish")
            assert "published 2 added" in published.output, published.output
            # Nothing changes on B until its interval comes round.
            assert (await node.engine.evaluate(PHOTO)).decision is Decision.ALLOW

            await node.clock.tick()
            blocked = await node.engine.evaluate(PHOTO)
            assert blocked.decision is Decision.FLAG_CSAM
            assert blocked.matched == "blocklist:sha256 (feed: instance-a.example)"
            near = await node.engine.evaluate(copies["resize_75"])
            assert near.decision is Decision.FLAG_CSAM
            assert near.matched is not None and near.matched.startswith("blocklist:pdq:")
            assert near.matched.endswith("(feed: instance-a.example)")
            allowed = await node.engine.evaluate(MAGENTA)
            assert allowed.decision is Decision.ALLOW
            assert allowed.matched == "allowlist:sha256 (feed: instance-a.example)"

            # A scan on B says which feed matched, in its summary and in the audit.
            media = tmp_path / "media"
            media.mkdir()
            (media / "photo.jpg").write_bytes(PHOTO)
            scanned = await b.cli("scan", str(media), "--json")
            (item,) = json.loads(scanned.stdout)["items"]
            assert item["matched"] == "blocklist:sha256 (feed: instance-a.example)"
            (action,) = json.loads((await b.cli("audit", "--json")).stdout)
            assert "matched blocklist:sha256 (feed: instance-a.example)" in action["detail"]

            listed = await b.cli("hashes", "list", "--source", "feed:instance-a.example", "--json")
            rows = json.loads(listed.output)
            assert {(r["list"], r["source"]) for r in rows} == {
                ("block", "feed:instance-a.example"),
                ("allow", "feed:instance-a.example"),
            }
            # Only a reason code travels, never the free text.
            assert {r["reason"] for r in rows} == {"confirmed", "known-safe"}

            # A takes the block back: B follows at the next interval.
            assert (await a.cli("hashes", "remove", str(photo))).exit_code == 0
            assert "0 added and 1 removed" in (await a.cli("feeds", "publish")).output
            await node.clock.tick()
            assert (await node.engine.evaluate(PHOTO)).decision is Decision.ALLOW

            status = json.loads((await b.cli("feeds", "status", "--json")).output)
            assert status[0]["status"]["applied_seq"] == 3
            assert status[0]["status"]["last_error"] is None
    finally:
        host.stop()


async def test_review_trust_queues_entries_until_an_admin_accepts(tmp_path: Path) -> None:
    a, b, host = await setup(tmp_path, trust="review")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    try:
        async with running(b) as node:
            await a.cli("hashes", "add", "--block", str(photo), "--reason", "r 8")
            await a.cli("feeds", "publish")
            await node.clock.tick()
            # Stored, but it does not block until accepted.
            assert (await node.engine.evaluate(PHOTO)).decision is Decision.ALLOW
            pending = json.loads((await b.cli("feeds", "pending", "--json")).output)
            assert [p["key"].split(":")[0] for p in pending] == ["pending"]
            accepted = await b.cli("feeds", "accept", pending[0]["key"])
            assert "accepted 1" in accepted.output

            async def blocked() -> bool:  # the CLI wrote B's state file from outside
                verdict = await node.engine.evaluate(PHOTO)
                return verdict.matched == "blocklist:sha256 (feed: instance-a.example)"

            await eventually(blocked, "the accepted entry to block on B")
            # The same entry published again does not queue it a second time.
            await node.clock.tick()
            assert json.loads((await b.cli("feeds", "pending", "--json")).output) == []
            # A removal from the source still applies to an accepted entry.
            await a.cli("hashes", "remove", str(photo))
            await a.cli("feeds", "publish")
            await node.clock.tick()
            assert (await node.engine.evaluate(PHOTO)).decision is Decision.ALLOW
    finally:
        host.stop()
