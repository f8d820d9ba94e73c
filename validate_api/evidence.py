"""Hand the bytes of a rejected upload to enforce, which keeps them as evidence.

pict-rs drops what it was told to reject, so this is the only moment the bytes exist. The
API publishes them with the verdict on the ``upload-evidence`` topic (enforce writes them
to the quarantine location); it needs no write access to any store for that. Only uploads
whose decision's action is ``quarantine`` are kept, as a bucket object with that decision
would be; the answer to pict-rs never depends on it.
"""

from __future__ import annotations

import asyncio
import logging

from pipeline.bus.base import Bus, BusError
from pipeline.events import (
    ActionType,
    Decision,
    Lane,
    Source,
    UploadEvidence,
    Verdict,
    encode,
    new_id,
)
from pipeline.policy import ActionPolicy
from pipeline.tracing import inject_headers
from validate_api.service import Outcome

log = logging.getLogger(__name__)

_FLAGGED = (Decision.FLAG_CSAM, Decision.FLAG_NSFW)


class EvidenceSender:
    """Publishes rejected uploads for enforce to keep."""

    def __init__(
        self, bus: Bus, topic: str, policy: ActionPolicy, *, timeout_s: float = 5.0
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.policy = policy
        self.timeout_s = timeout_s

    def wanted(self, outcome: Outcome) -> bool:
        """Whether this answer rejects a flagged upload that the policy quarantines."""
        return (
            not outcome.accepted
            and outcome.decision in _FLAGGED
            and self.policy.action_for(outcome.decision) is ActionType.QUARANTINE
        )

    async def send(
        self, outcome: Outcome, data: bytes, content_type: str | None, client_id: str | None
    ) -> bool:
        """Publish the upload and its verdict; False (logged) if the bus did not take it."""
        event = UploadEvidence(
            verdict=verdict_of(outcome),
            content=data,
            content_type=content_type,
            client_id=client_id,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.bus.produce(
                    self.topic, encode(event), event.key.encode(), inject_headers()
                )
        except (BusError, TimeoutError, OSError) as exc:
            log.error(
                "could not hand a rejected upload to enforce; it is not kept as evidence",
                extra={"verdict_id": event.verdict.verdict_id, "error": str(exc)},
            )
            return False
        return True


def verdict_of(outcome: Outcome) -> Verdict:
    """The verdict behind an answer: the sync lane's own, or one made for a fast-path hit
    (hash lists, verdict cache), which no verdict on the bus records otherwise."""
    body = dict(outcome.verdict)
    if "request_id" in body:
        return Verdict.model_validate(body)
    body.pop("type", None)
    return Verdict.model_validate(
        {**body, "request_id": new_id(), "lane": Lane.SYNC, "source": Source.API}
    )
