"""A reviewer's decisions: confirm, allow, delete — through the admin flows, audited.

- **confirm**: it is what pictguard said. It stays in quarantine (a held action is
  released, so it is quarantined now) and is marked for a report. Nothing is reported
  automatically; a person files the report with the evidence package.
- **allow**: a false positive. :meth:`EnforceAdmin.allow` puts the hash on the allowlist
  (the ``hashlists`` table every replica reads), restores quarantined copies and drops
  held actions; a kept upload's copy is removed, as it is no evidence of anything.
- **delete**: remove the bytes for good (the quarantine copy, or the object in place).
  Refused for an item confirmed for a report: that copy is the evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from enforce.admin import AdminError, EnforceAdmin
from enforce.review.items import ReviewItem
from enforce.review.journal import Journal, Mark, ReviewEvent, Session
from pipeline.events import ActionOutcome, ActionType, EnforcementAction, Verdict
from pipeline.storage import ObjectMissing, StorageError

Decision = Literal["confirm", "allow", "delete"]
DECISIONS: tuple[Decision, ...] = ("confirm", "allow", "delete")
DEFAULT_REASONS: dict[str, str] = {
    "confirm": "confirmed in the review console",
    "allow": "false positive (review console)",
    "delete": "deleted in the review console",
}
_EVENTS = {"confirm": ReviewEvent.CONFIRM, "allow": ReviewEvent.ALLOW, "delete": ReviewEvent.DELETE}
_MAX_BYTES = 256 * 1024 * 1024


class DecisionRefused(AdminError):
    """The decision cannot apply to this item; the message says why."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision did, for the page."""

    item_id: str
    decision: Decision
    summary: str


async def decide(
    admin: EnforceAdmin,
    journal: Journal,
    item: ReviewItem,
    decision: Decision,
    *,
    reviewer: str,
    reason: str,
    session: Session | None = None,
) -> Outcome:
    """Carry out ``decision`` on ``item`` for ``reviewer`` and record it in the audit."""
    reason = reason.strip() or DEFAULT_REASONS[decision]
    if item.status != "open":
        if item.status == "confirmed" and decision == "delete":
            raise DecisionRefused(
                "confirmed for a report: its copy is the evidence and stays (see "
                "enforce.quarantine_retention_days)"
            )
        raise DecisionRefused(f"already decided: {item.status}")
    note = f"{reason} — reviewer {reviewer}"
    if decision == "confirm":
        summary = await _confirm(admin, item, note)
        mark = Mark.CONFIRMED
    elif decision == "allow":
        summary = await _allow(admin, item, reason=reason, reviewer=reviewer, note=note)
        mark = Mark.ALLOWED
    else:
        summary = await _delete(admin, item, note)
        mark = Mark.DELETED
    dry = admin.dry_run and decision != "confirm"
    if not dry:
        await journal.mark(
            item.item_id, mark, reviewer, reason, verdict_id=item.verdict_id, sha256=item.sha256
        )
    await journal.record(
        reviewer,
        _EVENTS[decision],
        item_id=item.item_id,
        verdict_id=item.verdict_id,
        sha256=item.sha256,
        detail={"reason": reason, "kind": item.kind, "summary": summary, "dry_run": dry},
        session=session,
    )
    return Outcome(item.item_id, decision, summary)


async def _confirm(admin: EnforceAdmin, item: ReviewItem, note: str) -> str:
    if item.kind != "held":
        return "confirmed: kept and marked for a report (nothing is reported automatically)"
    held = next(
        (h for h in await admin.records.open_held() if h.action.action_id == item.item_id), None
    )
    if held is None:
        return "confirmed; its held action was already released"
    action = await admin.enforcer.release(held, note=f"confirmed: {note}")
    return f"confirmed; held {action.action.value}: {action.outcome.value}"


async def _allow(
    admin: EnforceAdmin, item: ReviewItem, *, reason: str, reviewer: str, note: str
) -> str:
    sha256 = item.sha256 or await _hash_of(admin, item)
    result = await admin.allow(sha256, reason=f"{reason} (review console)", author=reviewer)
    summary = result.summary
    if item.kind == "upload" and not admin.dry_run:
        summary += "; " + await _remove_copy(admin, item, f"false positive, copy removed: {note}")
    return summary


async def _delete(admin: EnforceAdmin, item: ReviewItem, note: str) -> str:
    if item.kind == "held":
        held = next(
            (h for h in await admin.records.open_held() if h.action.action_id == item.item_id),
            None,
        )
        if held is not None and not admin.dry_run:
            await admin.enforcer.release(held, discard=True, note=f"deleted instead: {note}")
    return await _remove_copy(admin, item, f"deleted: {note}")


async def _remove_copy(admin: EnforceAdmin, item: ReviewItem, detail: str) -> str:
    ref = item.bytes_ref
    if ref is None:
        raise DecisionRefused("nothing stored to delete for this item")
    verdict = item.verdict or _verdict_of(item.action)
    if admin.dry_run:
        outcome, note = ActionOutcome.DRY_RUN, f"dry run: would delete {ref.id}"
    else:
        try:
            existed = await admin.ctx.stores.for_ref(ref).delete(ref.key)
        except StorageError as exc:
            raise DecisionRefused(f"could not delete {ref.id}: {exc}") from None
        outcome = ActionOutcome.DONE if existed else ActionOutcome.ALREADY_ABSENT
        note = f"{detail} ({ref.id})"
    action = EnforcementAction(
        verdict_id=item.verdict_id,
        object=item.action.object,
        decision=item.action.decision,
        action=ActionType.DELETE,
        outcome=outcome,
        dry_run=admin.dry_run,
        detail=note,
        quarantine=item.action.quarantine,
        sha256=item.sha256,
        scores=item.action.scores,
    )
    await admin.enforcer.record(verdict, action)
    return f"delete {outcome.value}: {ref.id}"


async def _hash_of(admin: EnforceAdmin, item: ReviewItem) -> str:
    ref = item.bytes_ref
    if ref is None:
        raise DecisionRefused("no content hash and nothing stored to hash")
    try:
        data = await admin.ctx.stores.for_ref(ref).get(ref.key, max_bytes=_MAX_BYTES)
    except ObjectMissing:
        raise DecisionRefused(f"{ref.id} is gone and the verdict has no sha256") from None
    return hashlib.sha256(data).hexdigest()


def _verdict_of(action: EnforcementAction) -> Verdict:
    return Verdict(
        verdict_id=action.verdict_id,
        request_id=action.verdict_id,
        object=action.object,
        decision=action.decision,
        sha256=action.sha256,
        scores=action.scores,
    )
