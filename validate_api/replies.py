"""Reply routing: each API replica reads only the verdicts of its own requests.

A replica publishes sync scan requests with ``reply_to`` set to its own reply topic
(``<prefix>replies.<replica_id>``); classify sends the verdict there; the listener below
resolves the waiting request by its id. No replica ever reads the bulk verdict stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pipeline.bus.base import Bus, Consumer, Message
from pipeline.events import SchemaError, Verdict, decode
from pipeline.stage import Committer
from pipeline.tracing import consuming

log = logging.getLogger(__name__)


class ReplyRouter:
    def __init__(
        self,
        bus: Bus,
        topic: str,
        group_id: str,
        *,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group_id = group_id
        self.on_verdict = on_verdict
        self._pending: dict[str, asyncio.Future[Verdict]] = {}
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self.bus.ensure_topics([self.topic])
        self._consumer = self.bus.consumer([self.topic], self.group_id, low_latency=True)
        await self._consumer.start()
        self._task = asyncio.create_task(self._listen(self._consumer), name="replies")
        self.ready.set()

    async def stop(self) -> None:
        self.ready.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def expect(self, request_id: str) -> asyncio.Future[Verdict]:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def _resolve(self, message: Message) -> None:
        try:
            verdict = decode(message.value, Verdict)
        except SchemaError as exc:
            log.warning("ignoring a malformed reply on %s: %s", self.topic, exc)
            return
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        future = self._pending.pop(verdict.request_id, None)
        if future is not None and not future.done():
            future.set_result(verdict)
        # A reply for a request that already timed out is simply dropped.

    async def _listen(self, consumer: Consumer) -> None:
        # Commits run beside the reading: a reply never waits for a broker round trip.
        committer = Committer(consumer)
        while True:
            try:
                batch = await consumer.getmany(200, 500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — keep listening; the broker may return
                log.warning("reading replies from %s failed, retrying: %s", self.topic, exc)
                await asyncio.sleep(0.5)
                continue
            for message in batch:
                with consuming(message, self.bus.system):
                    self._resolve(message)
            if batch:
                committer.add(batch)
