"""The verdict ledger: which objects already have a verdict, as enforce recorded it.

Enforce owns the ledger (it records every verdict); other roles only ask it, through
:class:`VerdictLedger`, and the composition root hands them the implementation for the
process's mode:

- single process: enforce's ``verdicts`` table in the state file;
- distributed: the compacted ``object-verdicts`` topic, which enforce keeps current as it
  records verdicts (key: object id; value: :meth:`KnownVerdict.to_bytes` of the latest
  verdict about that object).

Reconcile asks it which listed objects need no new scan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.events import ObjectRef, Verdict


@dataclass(frozen=True, slots=True)
class KnownVerdict:
    """What the ledger keeps of a verdict: the bytes it was about and what it decided."""

    etag: str | None
    decision: str
    reason: str | None

    def to_bytes(self) -> bytes:
        """The value of this verdict's entry in the ``object-verdicts`` topic."""
        return json.dumps({"e": self.etag, "d": self.decision, "r": self.reason}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KnownVerdict:
        """Read an ``object-verdicts`` value (ValueError, KeyError or TypeError if it is not
        one)."""
        raw = json.loads(data)
        return cls(etag=raw.get("e"), decision=str(raw["d"]), reason=raw.get("r"))

    @classmethod
    def of(cls, verdict: Verdict) -> KnownVerdict:
        """The ledger's view of ``verdict``."""
        return cls(
            etag=verdict.object.etag if verdict.object else None,
            decision=verdict.decision.value,
            reason=verdict.reason.value if verdict.reason else None,
        )


class VerdictLedger(Protocol):
    """Which objects already have a verdict, and what it was."""

    async def known(self, refs: Sequence[ObjectRef]) -> dict[str, list[KnownVerdict]]:
        """Known verdicts per object id, for those of ``refs`` that have any."""
        ...
