"""Reply routing: each API replica reads only the verdicts of its own requests.

A replica publishes sync scan requests with ``reply_to`` set to its own reply topic
(``<prefix>replies.<replica_id>``); classify sends the verdict there; the listener below
resolves the waiting request by its id. No replica ever reads the bulk verdict stream.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.bus.base import Bus
from pipeline.bus.replies import ReplyListener
from pipeline.events import Verdict


class ReplyRouter(ReplyListener[Verdict]):
    """This replica's verdict replies; ``on_verdict`` sees every one (the fast path learns
    model versions from them)."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group_id: str,
        *,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> None:
        super().__init__(
            bus, topic, group_id, Verdict, what="replies", poll_ms=500, on_reply=on_verdict
        )
