"""Admin operations over the bus: the API asks, the enforce role acts and answers.

In distributed mode the API replicas hold no enforcement state of their own: an admin
request (``/admin/allow``, ``block``, ``restore``, ``enforce/resume``, ``enforce/status``,
``audit``) becomes an :class:`~pipeline.events.AdminRequest` on ``admin-requests``;
the enforce role runs it with its own enforcer (one guard, one set of held actions, one
audit trail) and sends the :class:`~pipeline.events.AdminReply` to the replica's own
``admin-replies.<replica id>`` topic, where :class:`AdminClient` hands it to the waiting
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from enforce.admin import AdminError, EnforceAdmin, EnforceContext, NotFound
from enforce.admin_api import AdminUnavailable, perform
from enforce.enforcer import Enforcer
from pipeline.bus.base import Bus, BusError, Message
from pipeline.bus.replies import ReplyListener
from pipeline.events import (
    AdminOperation,
    AdminReply,
    AdminRequest,
    encode,
)
from pipeline.stage import decode_or_dead_letter
from pipeline.storage import StorageError
from pipeline.topics import DEAD_LETTER
from pipeline.tracing import consuming, inject_headers

log = logging.getLogger(__name__)


class AdminRequestHandler:
    """Enforce's side: runs each admin request with the stage's enforcer, then replies.

    A batch handler for :func:`pipeline.stage.consume` over ``admin-requests``. Requests
    run one at a time, in order: two admins resuming and blocking at once see one
    sequence of events, as the audit trail tells it.
    """

    def __init__(
        self,
        ctx: EnforceContext,
        enforcer: Enforcer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        self.enforcer = enforcer
        self.clock = clock
        self._dead_letter = ctx.settings.topic(DEAD_LETTER)

    async def handle(self, batch: Sequence[Message]) -> None:
        for message in batch:
            request = await decode_or_dead_letter(
                self.ctx.bus, self._dead_letter, message, AdminRequest, stage="enforce-admin"
            )
            if request is None:
                continue
            with consuming(message, self.ctx.bus.system, {"pictguard.admin": request.operation}):
                await self._answer(request)

    async def _answer(self, request: AdminRequest) -> None:
        if request.deadline.timestamp() < self.clock():
            # The API answered 503 already; acting now would surprise the admin.
            log.warning(
                "admin request %s (%s) arrived after its deadline; not run",
                request.request_id,
                request.operation,
            )
            return
        reply = await self._run(request)
        await self.ctx.bus.produce(
            request.reply_to, encode(reply), request.request_id.encode(), inject_headers()
        )

    async def _run(self, request: AdminRequest) -> AdminReply:
        answer = AdminReply(request_id=request.request_id)
        try:
            async with EnforceAdmin(
                self.ctx, dry_run=request.dry_run, enforcer=self.enforcer
            ) as admin:
                answer.result = await perform(admin, request.operation, request.arguments)
        except NotFound as exc:
            answer.error, answer.message = "not_found", str(exc)
        except AdminError as exc:
            answer.error, answer.message = "invalid", str(exc)
        except StorageError as exc:
            answer.error, answer.message = "storage", str(exc)
        except BusError:
            raise  # not answered: the request is handled again once the bus is back
        except Exception as exc:
            log.exception("admin request %s (%s) failed", request.request_id, request.operation)
            answer.error = "internal"
            answer.message = f"enforce failed on {request.operation}: {exc.__class__.__name__}"
        return answer


class AdminClient:
    """The API replica's side: an admin backend that asks the enforce role over the bus.

    Call :meth:`start` before use (it creates this replica's reply topic and reads it) and
    :meth:`stop` at the end. Use it as ``admin_router(None, token=…, backend=client)``.
    """

    def __init__(
        self,
        bus: Bus,
        requests_topic: str,
        reply_topic: str,
        group_id: str,
        *,
        timeout_s: float,
    ) -> None:
        self.bus = bus
        self.requests_topic = requests_topic
        self.reply_topic = reply_topic
        self.group_id = group_id
        self.timeout_s = timeout_s
        self._replies = ReplyListener(
            bus,
            reply_topic,
            group_id,
            AdminReply,
            what="admin replies",
            poll_ms=100,
            ensure=[requests_topic],
        )

    async def start(self) -> None:
        """Create and read this replica's reply topic."""
        await self._replies.start()

    async def stop(self) -> None:
        """Stop reading, fail what still waits, drop the reply topic."""
        await self._replies.stop()
        with contextlib.suppress(BusError):
            await self.bus.drop_topics([self.reply_topic])

    async def __call__(
        self, operation: AdminOperation, arguments: dict[str, Any], dry_run: bool
    ) -> Any:
        deadline = datetime.now(UTC) + timedelta(seconds=self.timeout_s)
        request = AdminRequest(
            operation=operation,
            arguments=arguments,
            dry_run=dry_run,
            reply_to=self.reply_topic,
            deadline=deadline,
        )
        future = self._replies.expect(request.request_id)
        try:
            try:
                await self.bus.produce(
                    self.requests_topic,
                    encode(request),
                    request.request_id.encode(),
                    inject_headers(),
                )
            except BusError as exc:
                raise AdminUnavailable(
                    f"cannot reach the broker to ask the enforce role: {exc}"
                ) from None
            try:
                reply = await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError:
                raise AdminUnavailable(
                    f"the enforce role did not answer within {self.timeout_s:g} s: check that "
                    "`pictguard run enforce` is running on the same Kafka and topic prefix "
                    "(enforce.admin_timeout_s)"
                ) from None
        finally:
            self._replies.forget(request.request_id)
        if reply.error == "not_found":
            raise NotFound(reply.message)
        if reply.error == "invalid":
            raise AdminError(reply.message)
        if reply.error == "storage":
            raise StorageError(reply.message)
        if reply.error is not None:
            raise AdminUnavailable(reply.message)
        return reply.result
