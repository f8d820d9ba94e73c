"""One contract, two buses: every test runs on MemoryBus and on KafkaBus (Tansu broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from pipeline.bus.base import Bus, Message, Outgoing
from pipeline.bus.kafka import KafkaBus, create_topics
from pipeline.bus.memory import MemoryBus
from pipeline.stage import Committer, consume
from pipeline.state.topic_table import TopicTable
from tests.servers import Broker


@pytest.fixture(params=["memory", "kafka"])
async def bus_and_topic(
    request: pytest.FixtureRequest, topic_prefix: str
) -> AsyncIterator[tuple[Bus, str]]:
    topic = f"{topic_prefix}contract"
    bus: Bus
    if request.param == "memory":
        bus = MemoryBus(capacity=64, table_topics=[f"{topic_prefix}table"])
    else:
        broker: Broker = request.getfixturevalue("broker")
        settings = broker.settings(partitions=3)
        await create_topics(settings, [topic, f"{topic_prefix}table"])
        bus = KafkaBus(settings)
    await bus.start()
    yield bus, topic
    await bus.stop()


async def drain(bus: Bus, topic: str, group: str, n: int, *, commit: bool = True) -> list[Message]:
    consumer = bus.consumer([topic], group)
    await consumer.start()
    got: list[Message] = []
    try:
        for _ in range(200):
            batch = await consumer.getmany(200, 100)
            got += batch
            if commit:
                await consumer.commit(batch)
            if len(got) >= n:
                break
    finally:
        await consumer.stop()
    return got


async def test_round_trip_keeps_key_value_and_headers(bus_and_topic: tuple[Bus, str]) -> None:
    bus, topic = bus_and_topic
    await bus.produce(topic, b"hello", key=b"k1", headers={"traceparent": "00-abc-def-01"})
    [message] = await drain(bus, topic, topic + "-g", 1)
    assert (message.value, message.key) == (b"hello", b"k1")
    assert message.headers["traceparent"] == "00-abc-def-01"


async def test_every_message_reaches_the_group_once(bus_and_topic: tuple[Bus, str]) -> None:
    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"k%d" % i) for i in range(50)])
    got = await drain(bus, topic, topic + "-g", 50)
    assert sorted(int(m.value) for m in got) == list(range(50))


async def test_uncommitted_messages_are_redelivered(bus_and_topic: tuple[Bus, str]) -> None:
    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"same-key") for i in range(5)])
    first = await drain(bus, topic, topic + "-g", 5, commit=False)
    assert len(first) == 5
    again = await drain(bus, topic, topic + "-g", 5)
    assert [m.value for m in again] == [m.value for m in first]
    await bus.produce(topic, b"later", b"same-key")
    after_commit = await drain(bus, topic, topic + "-g", 1)
    assert [m.value for m in after_commit] == [b"later"]


async def test_background_commits_coalesce_and_hold_after_close(
    bus_and_topic: tuple[Bus, str],
) -> None:
    """A Committer commits beside the reading, merges what finished meanwhile into one
    commit, and close() waits for all of it: a later member of the group gets only what
    came after."""
    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"same-key") for i in range(6)])
    consumer = bus.consumer([topic], topic + "-g")
    await consumer.start()
    calls: list[list[bytes]] = []
    real_commit = consumer.commit

    async def recorded(messages: Sequence[Message]) -> None:
        calls.append([m.value for m in messages])
        await asyncio.sleep(0.05)  # a broker round trip
        await real_commit(messages)

    consumer.commit = recorded  # type: ignore[method-assign]
    got: list[Message] = []
    try:
        for _ in range(200):
            got += await consumer.getmany(200, 100)
            if len(got) >= 6:
                break
        committer = Committer(consumer)
        committer.add(got[:2])
        await asyncio.sleep(0)  # the first commit is out: the next two batches wait for it
        committer.add(got[2:4])
        committer.add(got[4:])
        await committer.close()
    finally:
        await consumer.stop()
    assert calls == [[b"0", b"1"], [b"2", b"3", b"4", b"5"]]
    await bus.produce(topic, b"later", b"same-key")
    assert [m.value for m in await drain(bus, topic, topic + "-g", 1)] == [b"later"]


async def test_two_members_of_a_group_split_the_work(bus_and_topic: tuple[Bus, str]) -> None:
    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"k%d" % i) for i in range(60)])
    a, b = bus.consumer([topic], topic + "-g"), bus.consumer([topic], topic + "-g")
    await asyncio.gather(a.start(), b.start())
    seen: list[bytes] = []
    try:
        for _ in range(100):
            for c in (a, b):
                batch = await c.getmany(100, 7)
                seen += [m.value for m in batch]
                await c.commit(batch)
            if len(seen) >= 60:
                break
    finally:
        await asyncio.gather(a.stop(), b.stop())
    assert sorted(int(v) for v in seen) == list(range(60))


async def test_stop_finishes_the_batch_in_hand_then_commits(
    bus_and_topic: tuple[Bus, str],
) -> None:
    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"k") for i in range(10)])
    stop = asyncio.Event()
    handled: list[bytes] = []

    class SlowHandler:
        async def handle(self, batch: Sequence[Message]) -> None:
            stop.set()  # SIGTERM arrives while this batch is being processed
            await asyncio.sleep(0.05)
            handled.extend(m.value for m in batch)

    await asyncio.wait_for(
        consume(bus, [topic], topic + "-g", SlowHandler(), stop, max_records=100), 30
    )
    assert handled  # the batch in hand was finished
    rest = await drain(bus, topic, topic + "-g", 10 - len(handled))
    # Nothing handled before the stop comes back (it was committed), and nothing is lost.
    assert sorted(int(m.value) for m in rest) == list(range(len(handled), 10))


async def test_topic_table_replays_and_follows(bus_and_topic: tuple[Bus, str]) -> None:
    bus, topic = bus_and_topic
    name = topic.replace("contract", "table")
    writer = TopicTable(bus, name)
    await writer.start()
    await writer.put("a", b"1")
    await writer.put("b", b"2")
    await writer.delete("a")
    reader = TopicTable(bus, name)
    await reader.start()
    try:
        assert await reader.get("a") is None
        assert await reader.get("b") == b"2"
        seen: list[tuple[str, bytes | None]] = []
        reader.subscribe(lambda k, v: seen.append((k, v)))
        await writer.put("c", b"3")
        for _ in range(100):
            if await reader.get("c") == b"3":
                break
            await asyncio.sleep(0.05)
        assert await reader.get("c") == b"3"
        assert ("c", b"3") in seen
    finally:
        await reader.stop()
        await writer.stop()


async def test_memory_bus_applies_back_pressure() -> None:
    bus = MemoryBus(capacity=4)
    consumer = bus.consumer(["t"], "g")
    await consumer.start()
    producer = asyncio.create_task(bus.produce_many([Outgoing("t", b"x") for _ in range(10)]))
    await asyncio.sleep(0.05)
    assert not producer.done()  # blocked: the queue holds 4
    assert bus.backlog("t") == 4
    got = 0
    while got < 10:
        batch = await consumer.getmany(100, 3)
        got += len(batch)
        await consumer.commit(batch)
    await asyncio.wait_for(producer, 5)


async def test_pipelined_batches_commit_in_order(bus_and_topic: tuple[Bus, str]) -> None:
    import random

    bus, topic = bus_and_topic
    await bus.produce_many([Outgoing(topic, b"%d" % i, b"k%d" % (i % 5)) for i in range(60)])
    stop = asyncio.Event()
    handled: list[int] = []
    rng = random.Random(1)

    class Jittery:
        async def handle(self, batch: Sequence[Message]) -> None:
            # Later batches often finish first; their offsets must still wait.
            await asyncio.sleep(rng.random() * 0.05)
            handled.extend(int(m.value) for m in batch)
            if len(handled) >= 60:
                stop.set()

    loop = consume(bus, [topic], topic + "-g", Jittery(), stop, max_records=7, max_inflight=4)
    await asyncio.wait_for(loop, 60)
    assert sorted(handled) == list(range(60))
    await bus.produce(topic, b"after", b"k")
    rest = await drain(bus, topic, topic + "-g", 1)
    assert [m.value for m in rest] == [b"after"]  # everything before was committed


async def test_bounded_topic_table_forgets_the_oldest_here_only(
    bus_and_topic: tuple[Bus, str],
) -> None:
    """A replica bounded to 3 entries keeps the 3 written last (a rewrite counts as new);
    the topic keeps everything, so an unbounded reader still sees all of it."""
    bus, topic = bus_and_topic
    name = topic.replace("contract", "table")
    bounded = TopicTable(bus, name, max_entries=3)
    await bounded.start()
    unbounded: TopicTable | None = None
    try:
        for key in ("a", "b", "c", "d"):
            await bounded.put(key, key.encode())
        await bounded.put("b", b"b2")  # rewritten: now the newest
        await asyncio.sleep(1.5)  # its own writes come back through the follower: no change
        await bounded.put("e", b"e")
        assert [await bounded.get(k) for k in "abcde"] == [None, b"b2", None, b"d", b"e"]
        unbounded = TopicTable(bus, name)
        await unbounded.start()
        assert [await unbounded.get(k) for k in "acde"] == [b"a", b"c", b"d", b"e"]
        # A restart replays into the bound (which 2 survive depends on how the partitions
        # interleave on Kafka; each holds its latest value).
        replayed = TopicTable(bus, name, max_entries=2)
        await replayed.start()
        try:
            kept = dict([(k, v) async for k, v in replayed.items()])
            latest = {"a": b"a", "b": b"b2", "c": b"c", "d": b"d", "e": b"e"}
            assert len(kept) == 2 and all(latest[k] == v for k, v in kept.items())
        finally:
            await replayed.stop()
    finally:
        if unbounded is not None:
            await unbounded.stop()
        await bounded.stop()
