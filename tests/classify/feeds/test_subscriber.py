"""Pulling a feed over HTTP: what is applied, and what a bad feed changes (nothing)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from classify.feeds import keys
from classify.feeds.feed import FeedError, publish
from classify.feeds.subscriber import FeedSubscriber, statuses, subscribe
from pipeline.hashlists import HashListStore
from pipeline.state.sqlite import SqliteState
from pipeline.storage.local import LocalStore
from tests.classify.feeds.helpers import StaticHost

SHA = ["%064x" % (0xA0 + i) for i in range(6)]
PDQ = "0f" * 32


@dataclass
class Setup:
    a: HashListStore
    b: HashListStore
    www: Path
    key: keys.Ed25519PrivateKey
    puller: FeedSubscriber
    url: str

    @property
    def feed(self) -> Path:
        return self.www / "a" / "feed.jsonl"

    @property
    def sig(self) -> Path:
        return self.www / "a" / "feed.jsonl.sig"

    async def publish(self) -> None:
        (self.www / "a").mkdir(exist_ok=True)
        await publish(self.a, LocalStore(self.www / "a"), "", self.key, "instance-a.example")

    async def pull(self) -> str | None:
        (status,) = (await self.puller.pull_all()).values()
        return status.last_error

    async def state(self) -> dict[str, bytes]:
        return {k: v async for k, v in self.b.table.items() if not k.startswith("meta:")}


@pytest_asyncio.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    state_a = SqliteState(tmp_path / "a.sqlite3")
    state_b = SqliteState(tmp_path / "b.sqlite3")
    await state_a.start()
    await state_b.start()
    www = tmp_path / "www"
    www.mkdir()
    public = keys.generate(tmp_path / "a.key")
    host = StaticHost(www).start()
    b = HashListStore(state_b.table("hashlists"))
    url = host.url_of("a/feed.jsonl")
    await subscribe(b, url, public, "block", name="instance-a.example")
    puller = FeedSubscriber(b, timeout_s=10)
    try:
        yield Setup(
            HashListStore(state_a.table("hashlists")),
            b,
            www,
            keys.load_private(tmp_path / "a.key"),
            puller,
            url,
        )
    finally:
        await puller.close()
        host.stop()
        await state_a.stop()
        await state_b.stop()


async def test_entries_hashes_and_removals_arrive(setup: Setup) -> None:
    await setup.a.add(sha256=SHA[0], pdq=PDQ, pdq_quality=90, list="block", reason="report 1")
    await setup.a.add(md5="ab" * 16, list="allow", category="nsfw", reason="known-safe")
    await setup.publish()
    assert await setup.pull() is None
    entries = {e.key: e async for e in setup.b.entries()}
    blocked = entries[f"feed:instance-a.example:{SHA[0]}"]
    assert (blocked.list, blocked.pdq, blocked.pdq_quality) == ("block", PDQ, 90)
    assert blocked.reason == "confirmed"  # free text stays on A
    allowed = entries[f"feed:instance-a.example:md5:{'ab' * 16}"]
    assert (allowed.list, allowed.category, allowed.reason) == ("allow", "nsfw", "known-safe")

    # A changes its mind about one and drops the other: B follows both.
    await setup.a.add(sha256=SHA[0], pdq=PDQ, pdq_quality=90, list="allow", reason="appeal")
    await setup.a.remove(md5="ab" * 16)
    await setup.publish()
    assert await setup.pull() is None
    entries = {e.key: e async for e in setup.b.entries()}
    assert list(entries) == [f"feed:instance-a.example:{SHA[0]}"]
    assert entries[f"feed:instance-a.example:{SHA[0]}"].list == "allow"
    status = (await statuses(setup.b))["instance-a.example"]
    assert (status.applied_seq, status.added, status.removed) == (4, 3, 1)


async def test_a_bad_feed_changes_nothing_and_says_why(setup: Setup, tmp_path: Path) -> None:
    await setup.a.add(sha256=SHA[0], list="block")
    await setup.publish()
    old_feed, old_sig = setup.feed.read_bytes(), setup.sig.read_bytes()
    await setup.a.add(sha256=SHA[1], list="block")
    await setup.publish()
    assert await setup.pull() is None
    good_feed, good_sig = setup.feed.read_bytes(), setup.sig.read_bytes()
    before = await setup.state()
    assert len(before) == 2

    other_key = tmp_path / "other.key"
    keys.generate(other_key)
    resigned = json.loads(good_sig)
    resigned["signature"] = keys.sign(keys.load_private(other_key), good_feed)
    # Another history under the right key: a publisher that lost its state and started over.
    rewritten_dir = tmp_path / "rewritten"
    rewritten_dir.mkdir()
    fresh_state = SqliteState(tmp_path / "fresh.sqlite3")
    await fresh_state.start()
    fresh = HashListStore(fresh_state.table("hashlists"))
    for sha in SHA[2:5]:
        await fresh.add(sha256=sha, list="allow")
    await publish(fresh, LocalStore(rewritten_dir), "", setup.key, "instance-a.example")
    await fresh_state.stop()

    cases = {
        "tampered": (good_feed.replace(b'"block"', b'"allow"', 1), good_sig, "does not verify"),
        "truncated": (good_feed[:-20], good_sig, "truncated"),
        "replayed": (old_feed, old_sig, "replayed"),
        "wrong key": (good_feed, json.dumps(resigned).encode(), "does not verify"),
        "rewritten": (
            (rewritten_dir / "feed.jsonl").read_bytes(),
            (rewritten_dir / "feed.jsonl.sig").read_bytes(),
            "rewritten",
        ),
        "not a signature": (good_feed, b"<html>not found</html>", "not a feed signature"),
    }
    for name, (feed, sig, why) in cases.items():
        setup.feed.write_bytes(feed)
        setup.sig.write_bytes(sig)
        error = await setup.pull()
        assert error is not None and why in error, (name, error)
        assert await setup.state() == before, name
        status = (await statuses(setup.b))["instance-a.example"]
        assert status.applied_seq == 2 and status.last_error == error, name

    setup.sig.unlink()
    setup.feed.write_bytes(good_feed)
    error = await setup.pull()
    assert error is not None and "404" in error

    # Back to the real feed: applied again, the error cleared.
    setup.sig.write_bytes(good_sig)
    assert await setup.pull() is None
    assert await setup.state() == before


async def test_an_unsigned_tail_waits_for_its_signature(setup: Setup) -> None:
    await setup.a.add(sha256=SHA[0], list="block")
    await setup.publish()
    # A line appended after the signature was made (a publish caught between its two
    # writes, or someone else's addition): the signed part applies, the tail does not.
    line = {"seq": 2, "op": "add", "type": "sha256", "hash": SHA[1], "list": "block"}
    line["time"] = "2024-01-01T00:00:00Z"
    with setup.feed.open("ab") as out:
        out.write(json.dumps(line).encode() + b"\n")
    assert await setup.pull() is None
    assert [e.sha256 async for e in setup.b.entries()] == [SHA[0]]
    status = (await statuses(setup.b))["instance-a.example"]
    assert status.applied_seq == 1


async def test_publishing_refuses_a_feed_it_cannot_extend(setup: Setup, tmp_path: Path) -> None:
    await setup.a.add(sha256=SHA[0], list="block")
    await setup.publish()
    keys.generate(tmp_path / "new.key")
    with pytest.raises(FeedError, match="publish with the key that made it"):
        await publish(
            setup.a,
            LocalStore(setup.www / "a"),
            "",
            keys.load_private(tmp_path / "new.key"),
            "instance-a.example",
        )
    setup.sig.unlink()
    with pytest.raises(FeedError, match=r"without its \.sig file"):
        await setup.publish()


async def test_only_this_instances_own_entries_are_published(setup: Setup) -> None:
    await setup.a.add(sha256=SHA[0], list="block", reason="admin block")
    await setup.a.add(md5="cd" * 16, list="block", source="ncmec-2024")  # licensed list
    # An entry A itself got from another feed: republishing it would echo between peers.
    await setup.a.add(sha256=SHA[1], list="block", source="feed:instance-c.example")
    await setup.publish()
    records = [json.loads(line) for line in setup.feed.read_text().splitlines()[1:]]
    assert [(r["type"], r["hash"]) for r in records] == [("sha256", SHA[0])]
    await publish(
        setup.a,
        LocalStore(setup.www / "a"),
        "",
        setup.key,
        "instance-a.example",
        sources=["local", "ncmec-2024"],
    )
    records = [json.loads(line) for line in setup.feed.read_text().splitlines()[1:]]
    assert [r["type"] for r in records] == ["sha256", "md5"]
