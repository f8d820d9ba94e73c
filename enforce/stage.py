"""The enforce stage: consumes verdicts, acts on them, produces the audit trail.

Run it with :func:`pipeline.stage.consume` over ``settings.topic(VERDICTS)``. A batch is
processed concurrently (up to ``enforce.concurrency`` verdicts at once) while verdicts
about the same object run one after the other in arrival order, so a repeat always sees
the action of the verdict before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from enforce.enforcer import Enforcer, GuardReport
from enforce.ledger import LedgerWriter
from enforce.notify import Notifier
from enforce.settings import EnforceConfig
from pipeline.bus.base import Bus, Message
from pipeline.events import EnforcementAction, Verdict
from pipeline.stage import decode_or_dead_letter
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from pipeline.topics import DEAD_LETTER
from pipeline.tracing import consuming

__all__ = ["EnforceStage"]

log = logging.getLogger(__name__)


class EnforceStage:
    """Acts on verdicts: report, delete or quarantine, behind the blast-radius guard."""

    def __init__(
        self,
        bus: Bus,
        settings: EnforceConfig,
        stores: Stores,
        state: SqliteState,
        *,
        on_outcome: Callable[[Verdict, EnforcementAction | None], None] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        ledger: LedgerWriter | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.enforcer = Enforcer(
            bus,
            settings,
            stores,
            state,
            on_outcome=on_outcome,
            notifier=notifier,
            clock=clock,
            ledger=ledger,
        )
        self._dead_letter = settings.topic(DEAD_LETTER)
        self._slots = asyncio.Semaphore(settings.enforce.concurrency)

    async def start(self) -> None:
        """Prepare the state tables, load the guard, start notifications, check quarantine.

        A guard still tripped from before is said here, once per start of the role (not by
        every admin command that loads the guard). Raises
        :class:`enforce.quarantine.QuarantineExposed` when the run would quarantine into a
        location that is publicly readable (or cannot be checked).
        """
        await self.enforcer.start(strict=True)
        trip = self.enforcer.guard.trip
        if trip is not None:
            held = await self.enforcer.records.count_open_held()
            log.warning(
                "blast-radius guard is still tripped from before the restart (%s; %d actions "
                "held); deletes and quarantines stay held until `pictguard enforce resume`",
                trip.reason,
                held,
                extra={"reason": trip.reason, "held": held},
            )

    async def guard_report(self) -> GuardReport:
        """The guard's trip (None while armed) and how many actions it holds now."""
        return await self.enforcer.guard_report()

    async def stop(self) -> None:
        """Flush pending notification digests and close channels."""
        await self.enforcer.stop()

    async def handle(self, batch: Sequence[Message]) -> None:
        """Act on a batch of verdict messages; returns once every action is acknowledged."""
        queues: dict[str, list[tuple[Verdict, Message]]] = {}
        for message in batch:
            verdict = await decode_or_dead_letter(
                self.bus, self._dead_letter, message, Verdict, stage="enforce"
            )
            if verdict is not None:
                queues.setdefault(verdict.key, []).append((verdict, message))
        # A TaskGroup cancels the rest if one raises (bus or state down): the batch is then
        # not committed and comes again, and the repeats are recognised as duplicates.
        async with asyncio.TaskGroup() as group:
            for items in queues.values():
                group.create_task(self._run_in_order(items))

    async def _run_in_order(self, items: list[tuple[Verdict, Message]]) -> None:
        for verdict, message in items:
            async with self._slots:
                # The enforcer's spans become children of this message's CONSUMER span.
                with consuming(message, self.bus.system):
                    await self.enforcer.enforce(verdict)
