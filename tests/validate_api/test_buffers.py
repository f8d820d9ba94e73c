"""The cap on upload bytes held across uploads, and who gives way when it is reached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from validate_api.app import BodyBuffers, BodyTooLarge, BuffersFull, ClientGone, read_body


class Sender:
    """One client's body, handed to the app piece by piece."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def send(self, n: int, *, more: bool = True) -> None:
        self.queue.put_nowait({"type": "http.request", "body": b"x" * n, "more_body": more})

    def leave(self) -> None:
        self.queue.put_nowait({"type": "http.disconnect"})

    async def receive(self) -> dict[str, Any]:
        return await self.queue.get()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_upload_holding_the_most_gives_way() -> None:
    buffers = BodyBuffers(cap=100)
    big, stalled, small = Sender(), Sender(), Sender()
    reads = {s: asyncio.create_task(read_body(s.receive, 1000, buffers)) for s in (big, stalled)}
    big.send(60)
    stalled.send(30)
    await settle()
    assert buffers.held == 90

    small.send(20, more=False)  # 110 > 100: the 60-byte upload, still being read, goes
    data, reading = await read_body(small.receive, 1000, buffers)
    assert data == b"x" * 20
    with pytest.raises(BuffersFull):
        await reads[big]
    assert buffers.held == 50 and not reads[stalled].done()

    buffers.release(reading)  # answered: its bytes are given back
    assert buffers.held == 30
    stalled.send(10, more=False)
    _, other = await reads[stalled]
    buffers.release(other)
    assert buffers.held == 0 and buffers.peak == 90  # never above the cap


async def test_an_upload_larger_than_all_others_is_refused_itself() -> None:
    buffers = BodyBuffers(cap=100)
    small, large = Sender(), Sender()
    waiting = asyncio.create_task(read_body(small.receive, 1000, buffers))
    small.send(10)
    await settle()
    large.send(95)
    with pytest.raises(BuffersFull):
        await read_body(large.receive, 1000, buffers)
    assert buffers.held == 10 and not waiting.done()
    small.send(0, more=False)
    _, reading = await waiting
    buffers.release(reading)
    assert buffers.held == 0


async def test_a_body_above_its_own_cap_and_a_client_that_leaves() -> None:
    buffers = BodyBuffers(cap=1000)
    sender = Sender()
    sender.send(60)
    sender.send(60)
    with pytest.raises(BodyTooLarge):
        await read_body(sender.receive, 100, buffers)
    gone = Sender()
    gone.send(10)
    gone.leave()
    with pytest.raises(ClientGone):
        await read_body(gone.receive, 100, buffers)
    assert buffers.held == 0
