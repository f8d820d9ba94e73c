"""Request and reply over the bus: a process reads its own reply topic and resolves the
request waiting on each reply's id.

The validate API waits this way for the verdicts of its sync uploads (one reply topic per
replica, see validate_api/replies.py); the admin endpoints of an API replica wait for the
enforce role's answers. A reply nobody waits for any more (timed out) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pipeline.bus.base import Bus, Consumer, Message
from pipeline.events import SchemaError, _Event, decode
from pipeline.stage import listen

log = logging.getLogger(__name__)

R = TypeVar("R", bound=_Event)


class ReplyListener(Generic[R]):
    """Reads ``topic`` (``reply_type`` events) and resolves :meth:`expect`'s futures.

    ``ensure`` names topics created with the reply topic at :meth:`start` (the requests
    topic); ``on_reply`` sees every reply, awaited or not; ``poll_ms`` bounds how long a
    fetch waits for the first reply of a batch.
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group_id: str,
        reply_type: type[R],
        *,
        what: str,
        poll_ms: int,
        ensure: Sequence[str] = (),
        on_reply: Callable[[R], None] | None = None,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group_id = group_id
        self.reply_type = reply_type
        self.what = what
        self.poll_ms = poll_ms
        self.ensure = tuple(ensure)
        self.on_reply = on_reply
        self.ready = asyncio.Event()
        self._pending: dict[str, asyncio.Future[R]] = {}
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting for their reply."""
        return len(self._pending)

    async def start(self) -> None:
        """Create the topics and read the reply topic in the background."""
        await self.bus.ensure_topics([*self.ensure, self.topic])
        self._consumer = self.bus.consumer([self.topic], self.group_id, low_latency=True)
        await self._consumer.start()
        self._task = asyncio.create_task(
            listen(
                self._consumer,
                self.bus.system,
                self._resolve,
                what=f"{self.what} from {self.topic}",
                poll_ms=self.poll_ms,
            ),
            name=self.what,
        )
        self.ready.set()

    async def stop(self) -> None:
        """Stop reading; requests still waiting are cancelled."""
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

    def expect(self, request_id: str) -> asyncio.Future[R]:
        """The future the reply to ``request_id`` resolves (register before sending)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for ``request_id`` (timed out, or failed to send)."""
        self._pending.pop(request_id, None)

    def _resolve(self, message: Message) -> None:
        try:
            reply = decode(message.value, self.reply_type)
        except SchemaError as exc:
            log.warning("ignoring a malformed %s on %s: %s", self.what, self.topic, exc)
            return
        if self.on_reply is not None:
            self.on_reply(reply)
        future = self._pending.pop(str(getattr(reply, "request_id", "")), None)
        if future is not None and not future.done():
            future.set_result(reply)
