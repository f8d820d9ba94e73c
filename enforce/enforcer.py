"""Acting on one verdict: policy, deduplication, guard, storage, audit, notification.

:class:`Enforcer` is what both the streaming stage and the admin commands use, so a
verdict from the bus, a ``pictguard block`` and a released held action go through the same
checks and leave the same trail: an ``actions`` event acknowledged by the bus, a row in the
state store, and a notification.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from enforce.guard import Guard, Trip
from enforce.ledger import LedgerWriter
from enforce.notify import Notifier, action_notice, alert_notice
from enforce.platform.flow import PlatformFlow
from enforce.quarantine import Quarantine, QuarantineExposed, QuarantineSpec
from enforce.records import HeldAction, Records
from enforce.settings import EnforceConfig, EnforceSettings
from pipeline import metrics
from pipeline.bus.base import Bus
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    Lane,
    ObjectRef,
    ScanRequest,
    Source,
    Verdict,
    encode,
    utcnow,
)
from pipeline.state.sqlite import SqliteState
from pipeline.storage import ObjectChanged, ObjectInfo, ObjectMissing, StorageError
from pipeline.storage.locations import Stores
from pipeline.topics import ACTIONS, SCAN_BULK
from pipeline.tracing import extract_context, inject_headers, span

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[Verdict, EnforcementAction | None], None]
# ``matched`` of the verdicts ``pictguard block`` makes: an admin's decision, not a rescan.
ADMIN_BLOCK = "blocklist:admin"
DESTRUCTIVE = (ActionType.DELETE, ActionType.QUARANTINE)
NEXT_STEP = (
    "review with `pictguard audit --since 1h`, allow false positives with `pictguard allow`, "
    "then `pictguard enforce resume` (or `--discard` to drop the held actions)"
)


def policy_action(settings: EnforceSettings, decision: Decision) -> ActionType | None:
    """The configured action for a decision; None for ``allow``."""
    return settings.action_policy().action_for(decision)


@dataclass(frozen=True, slots=True)
class GuardReport:
    """The guard as a run ends: the trip (None while armed) and the actions it holds."""

    trip: Trip | None
    held: int


def evidence(verdict: Verdict) -> str | None:
    """What made ``verdict`` flag, in a few words for the audit: the hash-list match, the
    policy's labels, or the highest scores."""
    if verdict.matched:
        return f"matched {verdict.matched}"
    if verdict.labels:
        return "labels " + ", ".join(verdict.labels)
    if verdict.scores:
        top = sorted(verdict.scores.items(), key=lambda kv: kv[1], reverse=True)[:3]
        return "scores " + ", ".join(f"{name} {score:.2f}" for name, score in top)
    return None


@dataclass(frozen=True, slots=True)
class Released:
    """What ``resume`` did: the trip it cleared and the actions it released or discarded."""

    trip: Trip | None
    actions: list[EnforcementAction]


class Enforcer:
    """Performs and records enforcement actions. One per process; start() before use."""

    def __init__(
        self,
        bus: Bus,
        settings: EnforceConfig,
        stores: Stores,
        state: SqliteState,
        *,
        on_outcome: OutcomeCallback | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        config: EnforceSettings | None = None,
        platform: PlatformFlow | None = None,
        ledger: LedgerWriter | None = None,
    ) -> None:
        self.bus = bus
        # Distributed mode: the ``object-verdicts`` topic other processes read the ledger from.
        self.ledger = ledger
        self.settings = settings
        # ``config`` overrides the enforce section, e.g. an admin command's --dry-run.
        self.config = config or settings.enforce
        self.stores = stores
        self.state = state
        self.on_outcome = on_outcome
        self.records = Records(state)
        self.guard = Guard(self.config.guard, state, clock=clock)
        self.quarantine = Quarantine(
            stores,
            QuarantineSpec.parse(self.config.quarantine, settings.storage.state_dir),
            retention_days=self.config.quarantine_retention_days,
            lock_mode=self.config.quarantine_lock_mode,
            recheck_s=self.config.quarantine_recheck_s,
        )
        self.notifier = notifier or Notifier(self.config.notify, state.table("enforce_notified"))
        self.actions_topic = settings.topic(ACTIONS)
        # pict-rs/Lemmy/Mastodon follow-ups of each action (None: none configured).
        self.platform = platform or PlatformFlow.build(
            self.config.platform, state, stores, self.records, self.config.action_policy()
        )
        self.rescan_topic = settings.topic(SCAN_BULK)
        self.quarantine_warnings: list[str] = []
        self._started = False

    async def start(self, *, strict: bool = False) -> None:
        """Prepare tables, load the guard, start notifications, check the quarantine.

        ``strict`` (the enforce stage, not the admin commands): a run that quarantines
        refuses to start, with :class:`QuarantineExposed`, when the quarantine location is
        publicly readable or its exposure cannot be established.
        """
        if self._started:
            return
        await self.records.start()
        await self.guard.start()
        metrics.watch_guard(lambda: self.guard.trip is not None)
        await self.notifier.start()
        if self.platform is not None:
            await self.platform.start()
        self._started = True
        scope = self.stores.scope
        checked = await self.quarantine.check(scope.allowed)
        self.quarantine_warnings = checked.warnings
        refusal = checked.refusal
        if strict and refusal is not None and self.config.quarantines:
            error = QuarantineExposed(refusal, starting=True)
            await self.alert_exposed(str(error))
            await self.stop()
            raise error
        for warning in self.quarantine_warnings:
            await self.alert_exposed(warning)
        if strict and not scope.restricted:
            log.warning(
                "storage.allowed_locations is empty: enforce acts on any bucket or folder a "
                "verdict names; set it to the locations pictguard protects"
            )

    async def alert_exposed(self, text: str) -> None:
        """A critical ``quarantine_exposed`` alert on every channel."""
        # Keyed by the hour: one alert per problem and hour, not one per object. The key
        # travels as a header (X-Pictguard-Event-Id): a digest, not the text.
        hour = utcnow().strftime("%Y-%m-%dT%H")
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        await self.notifier.notify(
            alert_notice(
                "quarantine_exposed",
                f"exposed:{hour}:{digest}",
                text,
                self.config.notify,
                quarantine=self.quarantine.spec.describe(),
            )
        )

    async def stop(self) -> None:
        """Send pending notifications and close the channels."""
        if self._started:
            await self.notifier.stop()
            if self.platform is not None:
                await self.platform.stop()
            self._started = False

    # -- the verdict path --------------------------------------------------------------

    async def enforce(
        self, verdict: Verdict, headers: Mapping[str, str] | None = None
    ) -> EnforcementAction | None:
        """Act on one verdict; returns the action taken (None for ``allow``).

        Storage failures become an action with outcome ``failed``. Bus and state-store
        failures raise, so the verdict is not committed and comes again.
        """
        # Without headers (the stage's CONSUMER span, an admin request) the current span
        # is the parent.
        parent = extract_context(headers) if headers else None
        attributes = {"pictguard.decision": verdict.decision.value}
        with span("enforce.verdict", context=parent, attributes=attributes) as current:
            if self.ledger is not None:
                # First the shared ledger, then the row: whoever sees the row (an admin, a
                # test) can count on the ledger entry being acknowledged already.
                await self.ledger.write(verdict)
            await self.records.record_verdict(verdict)
            intended = policy_action(self.config, verdict.decision)
            if intended is None:
                if verdict.object is not None and not self.config.dry_run:
                    await self._observe(False)
                self._callback(verdict, None)
                return None
            action = await self._decide(verdict, intended)
            current.set_attribute("pictguard.action", action.action.value)
            current.set_attribute("pictguard.outcome", action.outcome.value)
            await self._finish(verdict, action)
            return action

    async def _decide(self, verdict: Verdict, intended: ActionType) -> EnforcementAction:
        ref = verdict.object
        if ref is None:
            # Inline upload: validate_api answered pict-rs; nothing was stored to act on.
            intended = ActionType.REPORT
        elif intended in DESTRUCTIVE and self.quarantine.contains(ref):
            return self._action(
                verdict,
                ActionType.REPORT,
                ActionOutcome.DONE,
                "object lies in the quarantine location; left where it is",
            )
        elif intended in DESTRUCTIVE and (refused := self.stores.scope.refusal(ref)):
            return self._action(verdict, intended, ActionOutcome.FAILED, f"not acted on: {refused}")
        prior = await self.records.prior_action(verdict, intended, dry_run=self.config.dry_run)
        if prior is not None and prior.action is ActionType.QUARANTINE and ref is not None:
            restored = await self.records.restore_of(prior)
            if restored is not None and verdict.matched == ADMIN_BLOCK:
                prior = None  # `pictguard block` after a restore: the admin wants it acted on
            elif restored is not None:
                # Not a replay: the object is back because an admin put it back. Say so,
                # and leave it to them (allow it, or block it again to act).
                return self._action(
                    verdict,
                    intended,
                    ActionOutcome.KEPT,
                    f"left in place: an admin restored it (action {restored.action_id}) "
                    f"after quarantine action {prior.action_id}; its content is still "
                    "flagged — `pictguard allow` it, or `pictguard block` it to act again",
                )
        if prior is not None:
            return self._action(
                verdict,
                prior.action,
                ActionOutcome.DUPLICATE,
                f"repeat of action {prior.action_id} ({prior.outcome.value})",
                quarantine=prior.quarantine,
            )
        if ref is None:
            outcome = ActionOutcome.DRY_RUN if self.config.dry_run else ActionOutcome.DONE
            return self._action(
                verdict,
                ActionType.REPORT,
                outcome,
                "refused at upload (sync lane): never stored in the bucket",
            )
        if self.config.dry_run:
            return self._action(
                verdict, intended, ActionOutcome.DRY_RUN, self._would(intended, ref)
            )
        if intended not in DESTRUCTIVE:
            await self._observe(False)
            return self._action(verdict, ActionType.REPORT, ActionOutcome.DONE, None)
        if intended is ActionType.QUARANTINE:
            # Before the guard counts it: a public quarantine location holds the action.
            try:
                await self.quarantine.ensure_private(ref)
            except QuarantineExposed as exc:
                return await self._held_exposed(verdict, intended, exc)
            except StorageError as exc:
                return self._action(
                    verdict,
                    intended,
                    ActionOutcome.FAILED,
                    f"quarantine failed: cannot check the quarantine location: {exc}",
                )
        allowed, trip = await self.guard.judge()
        if trip is not None:
            await self._alert_trip(trip)
        if not allowed:
            current = self.guard.trip
            reason = current.reason if current else "guard tripped"
            return self._action(
                verdict,
                intended,
                ActionOutcome.HELD,
                f"held by the blast-radius guard ({reason}); release with "
                "`pictguard enforce resume`",
            )
        return await self._perform(verdict, intended, ref)

    async def _held_exposed(
        self, verdict: Verdict, action: ActionType, exc: QuarantineExposed
    ) -> EnforcementAction:
        log.error("QUARANTINE LOCATION CHECK: %s", exc)
        await self.alert_exposed(str(exc))
        return self._action(verdict, action, ActionOutcome.HELD, f"held: {exc}")

    def _would(self, action: ActionType, ref: ObjectRef) -> str:
        if action is ActionType.QUARANTINE:
            return f"dry run: would quarantine to {self.quarantine.target(ref)[1].id}"
        if action is ActionType.DELETE:
            return "dry run: would delete"
        return "dry run: report only"

    async def _perform(
        self, verdict: Verdict, action: ActionType, ref: ObjectRef, note: str | None = None
    ) -> EnforcementAction:
        """Delete or quarantine ``ref``; storage errors become a ``failed`` action."""
        attributes = {"pictguard.object": ref.id, "pictguard.action": action.value}
        with span(f"enforce.{action.value}", attributes=attributes) as current:
            done = await self._perform_in_span(verdict, action, ref, note)
            current.set_attribute("pictguard.outcome", done.outcome.value)
            return done

    async def _perform_in_span(
        self, verdict: Verdict, action: ActionType, ref: ObjectRef, note: str | None
    ) -> EnforcementAction:
        try:
            store = self.stores.for_ref(ref)
            current = await store.head(ref.key)
            if current is None:
                return await self._absent(verdict, action, ref)
            if _changed(ref, current):
                return await self._rescan(verdict, ref, current)
            if action is ActionType.DELETE:
                existed = await store.delete(ref.key)
                outcome = ActionOutcome.DONE if existed else ActionOutcome.ALREADY_ABSENT
                return self._action(verdict, action, outcome, _detail(note, evidence(verdict)))
            try:
                moved = await self.quarantine.move(ref, verdict, utcnow(), current)
            except ObjectMissing:
                return await self._absent(verdict, action, ref)
            except ObjectChanged:
                fresh = await store.head(ref.key)
                if fresh is None:
                    return await self._absent(verdict, action, ref)
                return await self._rescan(verdict, ref, fresh)
            detail = _detail(note, f"moved to {moved.id}", evidence(verdict))
            return self._action(verdict, action, ActionOutcome.DONE, detail, quarantine=moved)
        except QuarantineExposed as exc:
            return await self._held_exposed(verdict, action, exc)
        except StorageError as exc:
            log.error(
                "enforcement action failed",
                extra={"object": ref.id, "action": action.value, "error": str(exc)},
            )
            return self._action(
                verdict, action, ActionOutcome.FAILED, f"{action.value} failed: {exc}"
            )
        except Exception as exc:  # one object's surprise must not stop the others
            log.exception(
                "enforcement action failed unexpectedly",
                extra={"object": ref.id, "action": action.value},
            )
            return self._action(
                verdict,
                action,
                ActionOutcome.FAILED,
                f"{action.value} failed: {exc.__class__.__name__}: {exc}",
            )

    async def _absent(
        self, verdict: Verdict, action: ActionType, ref: ObjectRef
    ) -> EnforcementAction:
        if action is not ActionType.QUARANTINE:
            return self._action(verdict, action, ActionOutcome.ALREADY_ABSENT, None)
        # Gone already — perhaps quarantined by a run that crashed before recording.
        found = await self.quarantine.find_copy(ref, verdict.verdict_id)
        detail = "already in quarantine" if found else "object no longer exists"
        return self._action(verdict, action, ActionOutcome.ALREADY_ABSENT, detail, quarantine=found)

    async def _rescan(
        self, verdict: Verdict, ref: ObjectRef, current: ObjectInfo
    ) -> EnforcementAction:
        """The object is not the version classified: scan what is there now, touch nothing."""
        fresh = self.stores.for_ref(ref).ref(ref.key, current)
        request = ScanRequest(lane=Lane.BULK, source=Source.RECONCILE, object=fresh)
        await self.bus.produce(
            self.rescan_topic, encode(request), key=fresh.id.encode(), headers=inject_headers()
        )
        log.info(
            "object changed since it was classified; rescan requested",
            extra={"object": ref.id, "classified": ref.etag, "current": current.etag},
        )
        return self._action(
            verdict,
            ActionType.REPORT,
            ActionOutcome.DONE,
            f"not acted on: the object changed since it was classified (eTag {ref.etag}, now "
            f"{current.etag}); rescan requested",
        )

    def _action(
        self,
        verdict: Verdict,
        action: ActionType,
        outcome: ActionOutcome,
        detail: str | None,
        *,
        quarantine: ObjectRef | None = None,
    ) -> EnforcementAction:
        return EnforcementAction(
            verdict_id=verdict.verdict_id,
            object=verdict.object,
            decision=verdict.decision,
            action=action,
            outcome=outcome,
            dry_run=self.config.dry_run,
            detail=detail,
            quarantine=quarantine,
            sha256=verdict.sha256,
            scores=verdict.scores,
            reason=verdict.reason,
        )

    async def record(self, verdict: Verdict, action: EnforcementAction) -> None:
        """Publish, record and notify an action taken outside the verdict path (a kept
        upload, a reviewer's decision), exactly as the verdict path does its own."""
        await self.records.record_verdict(verdict)
        await self._finish(verdict, action)

    async def _finish(self, verdict: Verdict, action: EnforcementAction) -> None:
        """Publish (and await the ack), record, notify, follow up on the platform, call back."""
        await self._publish(verdict, action)
        if self.platform is not None:
            await self.platform.after(verdict, action, lambda a: self._publish(verdict, a))
        self._callback(verdict, action)

    async def _publish(self, verdict: Verdict, action: EnforcementAction) -> None:
        """Publish (and await the ack), record, notify — in that order."""
        await self.bus.produce(
            self.actions_topic, encode(action), key=action.key.encode(), headers=inject_headers()
        )
        metrics.record_action(action)
        await self.records.record_action(action)
        if action.outcome is ActionOutcome.HELD:
            await self.records.hold(action, verdict)
        if action.outcome not in (ActionOutcome.DUPLICATE, ActionOutcome.KEPT):
            # A replay was notified the first time; a kept object is the admin's own doing.
            await self.notifier.notify(action_notice(action, self.config.notify))
        log.info(
            "enforcement action",
            extra={
                "verdict_id": action.verdict_id,
                "object": action.object.id if action.object else None,
                "decision": action.decision.value,
                "action": action.action.value,
                "outcome": action.outcome.value,
            },
        )

    def _callback(self, verdict: Verdict, action: EnforcementAction | None) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(verdict, action)
        except Exception:  # the observer's bug must not undo an action already taken
            log.exception("on_outcome callback failed")

    async def guard_report(self) -> GuardReport:
        """The guard's trip (None while armed) and how many actions it holds."""
        return GuardReport(self.guard.trip, await self.records.count_open_held())

    async def _observe(self, destructive: bool) -> None:
        trip = await self.guard.observe(destructive)
        if trip is not None:
            await self._alert_trip(trip)

    async def _alert_trip(self, trip: Trip) -> None:
        metrics.record_guard_trip()
        held = await self.records.count_open_held()
        await self.notifier.notify(
            alert_notice(
                "guard_tripped",
                f"guard:{trip.trip_id}",
                f"blast-radius guard tripped on {self.config.notify.instance}: {trip.reason}; "
                "deletes and quarantines are held",
                self.config.notify,
                trip_id=trip.trip_id,
                reason=trip.reason,
                since=trip.since.isoformat(),
                held=held,
                next_step=NEXT_STEP,
            )
        )

    # -- admin operations --------------------------------------------------------------

    async def resume(self, *, discard: bool = False, note: str = "") -> Released:
        """Clear the guard, then release (or discard) every held action, oldest first."""
        trip = await self.guard.resume()
        done = [
            await self.release(held, discard=discard, note=note)
            for held in await self.records.open_held()
        ]
        return Released(trip, done)

    async def release(
        self, held: HeldAction, *, discard: bool = False, note: str = ""
    ) -> EnforcementAction:
        """Perform a held action after review, or discard it (recorded as a report)."""
        verdict = held.verdict
        suffix = f": {note}" if note else ""
        if discard or verdict.object is None:
            action = self._action(
                verdict,
                ActionType.REPORT,
                ActionOutcome.DONE,
                f"held {held.action.action.value} discarded by an admin{suffix}",
            )
            resolution = "discarded"
        elif self.config.dry_run:
            action = self._action(
                verdict,
                held.action.action,
                ActionOutcome.DRY_RUN,
                self._would(held.action.action, verdict.object),
            )
            resolution = "dry_run"
        else:
            action = await self._perform(
                verdict,
                held.action.action,
                verdict.object,
                f"released by an admin after the guard held it{suffix}",
            )
            resolution = "released"
        await self._finish(verdict, action)
        await self.records.resolve_held(held.action.action_id, f"{resolution}:{action.action_id}")
        return action

    async def restore(self, quarantined: EnforcementAction, *, note: str = "") -> EnforcementAction:
        """Put a quarantined object back under its original key (byte-identical)."""
        verdict = await self.records.verdict(quarantined.verdict_id) or Verdict(
            verdict_id=quarantined.verdict_id,
            request_id=quarantined.verdict_id,
            object=quarantined.object,
            decision=quarantined.decision,
            sha256=quarantined.sha256,
            scores=quarantined.scores,
        )
        copy, original = quarantined.quarantine, quarantined.object
        if copy is None or original is None:
            raise ValueError(f"action {quarantined.action_id} did not quarantine anything")
        detail = f"restored from {copy.id}" + (f": {note}" if note else "")
        refused = self.stores.scope.refusal(original)
        if refused is not None:
            # The original's location comes from the copy's metadata: never write outside
            # the locations pictguard may act on, whatever that metadata says.
            action = self._action(
                verdict,
                ActionType.RESTORE,
                ActionOutcome.FAILED,
                f"not restored: {refused}",
                quarantine=copy,
            )
        elif self.config.dry_run:
            action = self._action(
                verdict,
                ActionType.RESTORE,
                ActionOutcome.DRY_RUN,
                f"dry run: would restore {original.id} from {copy.id}",
                quarantine=copy,
            )
        else:
            try:
                remark = await self.quarantine.restore(copy, original)
                action = self._action(
                    verdict,
                    ActionType.RESTORE,
                    ActionOutcome.DONE,
                    detail + (f"; {remark}" if remark else ""),
                    quarantine=copy,
                )
            except ObjectMissing:
                action = self._action(
                    verdict,
                    ActionType.RESTORE,
                    ActionOutcome.FAILED,
                    f"quarantine copy {copy.id} no longer exists",
                    quarantine=copy,
                )
            except StorageError as exc:
                action = self._action(
                    verdict,
                    ActionType.RESTORE,
                    ActionOutcome.FAILED,
                    f"restore failed: {exc}",
                    quarantine=copy,
                )
        await self._finish(verdict, action)
        return action


def _detail(*parts: str | None) -> str | None:
    """The audit's detail: the parts that are there, joined."""
    return "; ".join(p for p in parts if p) or None


def _changed(ref: ObjectRef, current: ObjectInfo) -> bool:
    """Whether ``current`` is another version than the one ``ref`` (the verdict) names."""
    if ref.version_id and current.version_id and ref.version_id != current.version_id:
        return True
    return bool(ref.etag and current.etag and ref.etag.strip('"') != current.etag.strip('"'))
