"""The follow-up of an enforcement action on pict-rs, Lemmy and Mastodon.

:meth:`PlatformFlow.after` is called by the enforcer once an action is recorded:

- after a quarantine or delete that was carried out (``done``; also a replay of one, and
  ``already_absent`` when the copy is found in the quarantine — a crash in between): purge
  the image from pict-rs, then apply the Lemmy or Mastodon policy for the decision;
- after a ``report``: only the platform reports (nothing destructive follows a report);
- after a ``restore`` that was carried out: undo what can be undone (re-import into
  pict-rs under the old aliases, restore removed posts and comments, unban, reverse the
  account action, resolve pictguard's reports).

It never runs in a dry run, for inline uploads (pict-rs deleted a rejected upload
itself), or when the object was already gone without a quarantined copy (nothing of it
is left to clean up — e.g. pict-rs removed it after its validation said no).

Guard: the destructive platform steps (purge, remove, ban, account actions) belong to the
quarantine or delete they follow, which the blast-radius guard admitted (counted once per
image); a held action's follow-up waits with it and runs when an admin releases it.

Every follow-up is one action per platform on the ``actions`` topic and in the audit
(``purge``, ``reimport``, ``moderate``), with the platform's ids and links to its own
moderation pages in ``platform``. Repeats do nothing twice (``enforce.platform.steps``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enforce.platform.http import PlatformError
from enforce.platform.lemmy import LemmyClient, Uploader, UploadIndex, Usage
from enforce.platform.mastodon import (
    MastodonClient,
    Runner,
    command_runner,
    parse_lookup,
    parse_media_key,
)
from enforce.platform.pictrs import PictrsClient, PictrsIndex
from enforce.platform.settings import MASTODON_ACCOUNT_ACTIONS, PlatformSettings
from enforce.platform.steps import Step, Steps
from enforce.records import Records
from pipeline.bus.base import BusError
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    ObjectRef,
    StoreKind,
    Verdict,
)
from pipeline.policy import DESTRUCTIVE, ActionPolicy
from pipeline.state.sqlite import SqliteState, StateError
from pipeline.storage import ObjectMissing, StorageError
from pipeline.storage.locations import Location, Stores, parse_location

log = logging.getLogger(__name__)

Emit = Callable[[EnforcementAction], Awaitable[None]]
_MAX_REIMPORT_BYTES = 512 * 1024 * 1024
_FOLLOWED = (ActionType.REPORT, ActionType.DELETE, ActionType.QUARANTINE)


def mastodon_content(sha: str, key: str) -> str | None:
    """What Mastodon steps are recorded under: the file's sha256 and its record."""
    media = parse_media_key(key)
    return None if media is None else f"{sha}:{media.table}:{media.record_id}"


def model_only(verdict: Verdict) -> bool:
    """Whether only models spoke: no hash list (sha256, PDQ, a feed or HMA) flagged it."""
    return not verdict.by_hash_list


def _basis(verdict: Verdict) -> str:
    if verdict.matched:
        return f"hash-list match {verdict.matched}"
    top = sorted(verdict.scores.items(), key=lambda kv: kv[1], reverse=True)[:3]
    scores = ", ".join(f"{k}={v:.2f}" for k, v in top)
    return f"model verdict ({scores})" if scores else "model verdict"


@dataclass
class _Run:
    """What one platform's follow-up did, for its action event and notification."""

    system: str
    phase: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def did(self, step: str, outcome: str = "done", **ids: Any) -> None:
        self.steps.append({"step": step, "outcome": outcome, **ids})

    def fail(self, what: str, exc: Exception) -> None:
        self.failures.append(f"{what}: {exc}")
        log.warning(
            "platform step failed", extra={"system": self.system, "step": what, "error": str(exc)}
        )

    def link(self, url: str) -> None:
        if url not in self.links:
            self.links.append(url)

    @property
    def acted(self) -> bool:
        return any(s["outcome"] == "done" for s in self.steps)

    def outcome(self) -> ActionOutcome:
        return ActionOutcome.FAILED if self.failures else ActionOutcome.DONE

    def detail(self) -> str:
        parts = [
            f"{s['step']} {s.get('target', '')}".strip()
            + ("" if s["outcome"] == "done" else f" ({s['outcome']})")
            for s in self.steps
        ]
        text = "; ".join(parts) if parts else "nothing to act on"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        if self.failures:
            text += "; FAILED: " + "; ".join(self.failures)
        return f"{self.system}: {text}"

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"system": self.system, "phase": self.phase, **self.info}
        body["steps"] = self.steps
        if self.links:
            body["links"] = self.links
        return body


class PlatformFlow:
    """Follows enforcement actions on the platforms ``settings`` configures."""

    def __init__(
        self,
        settings: PlatformSettings,
        state: SqliteState,
        stores: Stores,
        records: Records,
        *,
        policy: ActionPolicy | None = None,
        tootctl: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.records = records
        self.policy = policy
        self.steps = Steps(state)
        self.pictrs_locations = [parse_location(x) for x in settings.pictrs.locations]
        self.mastodon_locations = [parse_location(x) for x in settings.mastodon.locations]
        self.pictrs: PictrsClient | None = None
        self.index: PictrsIndex | None = None
        self.lemmy: LemmyClient | None = None
        self.uploads: UploadIndex | None = None
        self.mastodon: MastodonClient | None = None
        self.tootctl: Runner | None = None
        if settings.pictrs.enabled:
            self.pictrs = PictrsClient(settings.pictrs)
            self.index = PictrsIndex(self.pictrs, state, page_size=settings.pictrs.page_size)
        if settings.lemmy.enabled:
            self.lemmy = LemmyClient(settings.lemmy)
            self.uploads = UploadIndex(self.lemmy, state)
        if settings.mastodon.enabled:
            self.mastodon = MastodonClient(settings.mastodon)
            self.tootctl = tootctl or command_runner(
                settings.mastodon.tootctl, settings.mastodon.tootctl_timeout_s
            )

    @classmethod
    def build(
        cls,
        settings: PlatformSettings,
        state: SqliteState,
        stores: Stores,
        records: Records,
        policy: ActionPolicy,
    ) -> PlatformFlow | None:
        """The flow for these settings, or None when no platform is configured."""
        return cls(settings, state, stores, records, policy=policy) if settings.enabled else None

    async def start(self) -> None:
        """Create the state tables (records must have started the state store)."""
        await self.steps.start()
        if self.index is not None:
            await self.index.start()
        if self.uploads is not None:
            await self.uploads.start()

    async def stop(self) -> None:
        """Close the HTTP clients."""
        for client in (self.pictrs, self.lemmy, self.mastodon):
            if client is not None:
                await client.aclose()

    # -- which platform ----------------------------------------------------------------

    @staticmethod
    def _relative(ref: ObjectRef, locations: list[Location]) -> str | None:
        for loc in locations:
            if loc.kind is not ref.store:
                continue
            if ref.store is StoreKind.S3:
                if ref.bucket == loc.root and ref.key.startswith(loc.prefix):
                    return ref.key[len(loc.prefix) :].lstrip("/")
                continue
            full = (Path(ref.bucket) / ref.key).resolve()
            root = Path(loc.root).resolve()
            if full.is_relative_to(root):
                return full.relative_to(root).as_posix()
        return None

    # -- entry point -------------------------------------------------------------------

    async def after(self, verdict: Verdict, action: EnforcementAction, emit: Emit) -> None:
        """Follow ``action`` (already recorded) on the platform that serves its object.

        Platform failures become ``failed`` actions; a state-store or bus failure raises
        (the verdict then comes again and the follow-up resumes where it stopped).
        """
        try:
            await self._after(verdict, action, emit)
        except (StateError, BusError):
            raise
        except Exception:  # one image's surprise must not stop the pipeline
            log.exception(
                "platform follow-up failed unexpectedly",
                extra={"verdict_id": verdict.verdict_id, "action": action.action.value},
            )

    async def _after(self, verdict: Verdict, action: EnforcementAction, emit: Emit) -> None:
        ref = action.object or verdict.object
        if action.dry_run or ref is None:
            return
        if action.action is ActionType.RESTORE:
            if action.outcome is ActionOutcome.DONE:
                await self._undo(verdict, action, ref, emit)
            return
        if action.action not in _FOLLOWED or not await self._carried_out(verdict, action):
            return
        if (
            action.action is ActionType.REPORT
            and self.policy is not None
            and self.policy.action_for(verdict.decision) is not ActionType.REPORT
        ):
            # Not the policy's report: a held action an admin discarded (or allowed), or an
            # object inside the quarantine location. Nothing to tell the platform.
            return
        sha = (verdict.sha256 or action.sha256 or "").lower()
        if not sha:
            log.warning(
                "no sha256 in the verdict: nothing to look up on the platform",
                extra={"object": ref.id},
            )
            return
        destructive = action.action in DESTRUCTIVE
        if self.pictrs is not None and self._relative(ref, self.pictrs_locations) is not None:
            lemmy_steps = self.lemmy is not None and bool(
                self.settings.lemmy.steps(verdict.decision)
            )
            if not (destructive and self.settings.pictrs.purge) and not lemmy_steps:
                return  # nothing to purge, nothing to look up for (e.g. an error verdict)
            aliases = await self._pictrs_follow(verdict, action, sha, destructive, emit)
            if lemmy_steps:
                await self._lemmy_follow(verdict, action, sha, aliases, destructive, emit)
            return
        if self.mastodon is not None:
            key = self._relative(ref, self.mastodon_locations)
            if key is not None:
                await self._mastodon_follow(verdict, action, sha, key, destructive, emit)

    async def _carried_out(self, verdict: Verdict, action: EnforcementAction) -> bool:
        """Whether the storage action (or, for a replay, the one it repeats) took effect."""
        done = action
        if action.outcome is ActionOutcome.DUPLICATE:
            prior = await self.records.prior_action(verdict, action.action, dry_run=False)
            if prior is None:
                return False
            done = prior
        if done.outcome is ActionOutcome.DONE:
            return True
        # Gone before pictguard got to it: a quarantined copy means a crash came between
        # the move and its record; no copy means the platform removed it itself.
        return done.outcome is ActionOutcome.ALREADY_ABSENT and done.quarantine is not None

    def _event(
        self, verdict: Verdict, cause: EnforcementAction, kind: ActionType, run: _Run
    ) -> EnforcementAction:
        return EnforcementAction(
            verdict_id=verdict.verdict_id,
            object=cause.object or verdict.object,
            decision=verdict.decision,
            action=kind,
            outcome=run.outcome(),
            detail=run.detail(),
            quarantine=cause.quarantine,
            sha256=verdict.sha256 or cause.sha256,
            scores=verdict.scores,
            platform=run.payload(),
        )

    def _reason(self, verdict: Verdict, alias: str | None = None) -> str:
        what = f" image {alias}" if alias else ""
        return (
            f"pictguard: {verdict.decision.value} ({_basis(verdict)}){what}; "
            f"verdict {verdict.verdict_id}"
        )

    # -- pict-rs -----------------------------------------------------------------------

    async def _pictrs_follow(
        self,
        verdict: Verdict,
        action: EnforcementAction,
        sha: str,
        destructive: bool,
        emit: Emit,
    ) -> list[str]:
        """Purge the image from pict-rs (after a quarantine/delete); its aliases for Lemmy."""
        assert self.pictrs is not None and self.index is not None
        purge = destructive and self.settings.pictrs.purge
        marker = f"followup:pictrs:{'purge' if purge else 'lookup'}"
        followed = await self.steps.active(marker, sha)
        if followed is not None:
            return list(followed.data.get("aliases", []))
        run = _Run("pictrs", "apply")
        aliases: list[str] = []
        try:
            image = await self.index.find(sha)
        except PlatformError as exc:
            run.fail("looking the image up", exc)
            if purge:
                await emit(self._event(verdict, action, ActionType.PURGE, run))
            return aliases
        if image is None:
            run.notes.append(
                "pict-rs has no original with this sha256 (a variant such as a thumbnail, "
                "purged with its original; or purged already)"
            )
            run.info["sha256"] = sha
        else:
            aliases = list(image.aliases)
            run.info.update(hash=image.hex, aliases=aliases)
            if purge:
                aliases = await self._purge(verdict, sha, image.hex, aliases, run)
        if not run.failures:
            await self.steps.record(
                marker, sha, "pictrs", marker, verdict.verdict_id, {"aliases": aliases}
            )
        if purge:
            event = self._event(verdict, action, ActionType.PURGE, run)
            if not run.failures and not run.acted:
                # Nothing left to purge: not in pict-rs, or purged already.
                event = event.model_copy(update={"outcome": ActionOutcome.ALREADY_ABSENT})
            await emit(event)
        return aliases

    async def _purge(
        self, verdict: Verdict, sha: str, hex_: str, aliases: list[str], run: _Run
    ) -> list[str]:
        assert self.pictrs is not None and self.index is not None
        target = f"pictrs:hash:{hex_}"
        purged: list[str] | None = None
        try:
            # Any alias leads to the hash; the index may hold one removed since.
            for alias in aliases:
                purged = await self.pictrs.purge(alias)
                if purged is not None:
                    break
        except PlatformError as exc:
            run.fail(f"purge of hash {hex_[:16]}…", exc)
            return aliases
        await self.index.forget(hex_)
        if purged is None:
            run.did("purge", "already_absent", target=f"hash {hex_[:16]}…")
            run.notes.append("pict-rs knows none of its aliases any more")
            return aliases
        await self.steps.record(
            target, sha, "pictrs", "purge", verdict.verdict_id, {"hex": hex_, "aliases": purged}
        )
        run.info["aliases"] = purged
        run.did("purge", target=f"hash {hex_[:16]}…", aliases=purged)
        return purged

    # -- Lemmy -------------------------------------------------------------------------

    async def _lemmy_follow(
        self,
        verdict: Verdict,
        action: EnforcementAction,
        sha: str,
        aliases: list[str],
        destructive: bool,
        emit: Emit,
    ) -> None:
        assert self.lemmy is not None and self.uploads is not None
        marker = f"followup:lemmy:{action.action.value}"
        if not aliases or await self.steps.active(marker, sha) is not None:
            return
        settings = self.settings.lemmy
        wanted = settings.steps(verdict.decision)
        run = _Run("lemmy", "apply")
        site = self.lemmy.site
        uploader: tuple[str, Uploader] | None = None
        usage = Usage()
        try:
            uploader = await self.uploads.uploader(aliases)
        except PlatformError as exc:
            run.fail("looking up the uploader", exc)
        try:
            usage = await self.lemmy.usage(aliases, settings.search_pages)
        except PlatformError as exc:
            run.fail("looking up the posts and comments", exc)
        if uploader is not None:
            _, person = uploader
            run.info["uploader"] = {"person_id": person.person_id, "name": person.name}
            run.link(f"{site}/u/{person.name}")
        else:
            run.notes.append("uploader unknown (not among the uploads Lemmy lists)")
        run.info["posts"] = sorted(usage.posts)
        run.info["comments"] = sorted(usage.comments)
        if not usage.posts and not usage.comments:
            run.notes.append("no post or comment found that uses it")
        reason = self._reason(verdict, aliases[0])
        purge = destructive and "purge" in wanted
        remove = destructive and "remove" in wanted and not purge
        targets = [("post", pid) for pid in sorted(usage.posts)] + [
            ("comment", cid) for cid in sorted(usage.comments)
        ]
        for kind, oid in targets:
            run.link(f"{site}/{kind}/{oid}")
            if purge and kind == "comment" and usage.comments[oid].post_id in usage.posts:
                run.did("purge", "with its post", target=f"comment {oid}")
                continue  # purging the post purged its comments
            if "report" in wanted and not purge:
                await self._lemmy_step(run, sha, verdict, "report", kind, oid, reason)
            if remove:
                await self._lemmy_step(run, sha, verdict, "remove", kind, oid, reason)
            if purge:
                await self._lemmy_step(run, sha, verdict, "purge", kind, oid, reason)
        skipped = [s for s in ("remove", "purge", "ban") if s in wanted and not destructive]
        if skipped:
            run.notes.append(
                f"{', '.join(skipped)} skipped: only a quarantine or delete is followed by them "
                f"(this decision's storage action is {action.action.value})"
            )
        if destructive and "ban" in wanted:
            if uploader is None:
                run.notes.append("no ban: uploader unknown")
            elif model_only(verdict) and not settings.ban_model_only:
                run.did("ban", "refused", target=f"person {uploader[1].person_id}")
                run.notes.append(
                    "ban refused for a model-only verdict (enforce.platform.lemmy.ban_model_only)"
                )
            else:
                await self._lemmy_step(
                    run, sha, verdict, "ban", "person", uploader[1].person_id, reason
                )
        if run.steps or "report" in wanted:
            run.link(f"{site}/reports")
        if any(s["step"] in ("remove", "purge", "ban") for s in run.steps):
            run.link(f"{site}/modlog")
        if not run.failures:
            await self.steps.record(marker, sha, "lemmy", marker, verdict.verdict_id)
        await emit(self._event(verdict, action, ActionType.MODERATE, run))

    async def _lemmy_step(
        self,
        run: _Run,
        sha: str,
        verdict: Verdict,
        step: str,
        kind: str,
        oid: int,
        reason: str,
    ) -> None:
        assert self.lemmy is not None
        target = f"lemmy:{step}:{kind}:{oid}"
        label = f"{kind} {oid}"
        if await self.steps.active(target, sha) is not None:
            run.did(step, "already_done", target=label)
            return
        data: dict[str, Any] = {"kind": kind, "id": oid}
        if await self.steps.held_elsewhere(target, sha):
            run.did(step, "already_done", target=label)
        else:
            s = self.settings.lemmy
            try:
                if step == "report":
                    data["report_id"] = await self.lemmy.report(kind, oid, reason)
                elif step == "remove":
                    await self.lemmy.remove(kind, oid, True, reason)
                elif step == "purge":
                    await self.lemmy.purge(kind, oid, reason)
                else:
                    await self.lemmy.ban(
                        oid, True, reason, remove_data=s.ban_remove_data, days=s.ban_days
                    )
                    data["remove_data"] = s.ban_remove_data
            except PlatformError as exc:
                if exc.code in ("couldnt_find_post", "couldnt_find_comment") and step != "report":
                    run.did(step, "already_absent", target=label)
                    return
                run.fail(f"{step} {label}", exc)
                return
            run.did(step, target=label, **{k: v for k, v in data.items() if k == "report_id"})
        await self.steps.record(target, sha, "lemmy", step, verdict.verdict_id, data)

    # -- Mastodon ----------------------------------------------------------------------

    async def _mastodon_follow(
        self,
        verdict: Verdict,
        action: EnforcementAction,
        sha: str,
        key: str,
        destructive: bool,
        emit: Emit,
    ) -> None:
        assert self.mastodon is not None and self.tootctl is not None
        media = parse_media_key(key)
        if media is None or media.table not in ("media_attachments", "accounts"):
            return  # emoji, preview cards, site uploads: nobody's post to report
        # The same bytes may be several attachments (one per status), and one attachment
        # several files (its styles): steps are per file content *and* record.
        sha = mastodon_content(sha, key) or sha
        marker = f"followup:mastodon:{action.action.value}"
        if await self.steps.active(marker, sha) is not None:
            return
        settings = self.settings.mastodon
        wanted = settings.steps(verdict.decision)
        run = _Run("mastodon", "apply")
        run.info.update(table=media.table, record_id=str(media.record_id), style=media.style)
        site = settings.url
        try:
            status, output = await self.tootctl(self.mastodon.media_url(key))
        except PlatformError as exc:
            run.fail("tootctl media lookup", exc)
            await emit(self._event(verdict, action, ActionType.MODERATE, run))
            return
        owner = parse_lookup(output, self.mastodon.domain) if status == 0 else None
        if owner is None or not owner.username:
            why = output.strip().splitlines()[-1] if output.strip() else f"exit status {status}"
            run.notes.append(f"tootctl media lookup found no status or account: {why}")
            await self.steps.record(marker, sha, "mastodon", marker, verdict.verdict_id)
            await emit(self._event(verdict, action, ActionType.MODERATE, run))
            return
        try:
            account_id = await self.mastodon.find_account(owner.username, owner.domain)
        except PlatformError as exc:
            run.fail(f"finding account {owner.username}", exc)
            await emit(self._event(verdict, action, ActionType.MODERATE, run))
            return
        acct = owner.username + (f"@{owner.domain}" if owner.domain else "")
        run.info.update(account=acct, account_id=account_id, status_id=owner.status_id)
        if account_id is None:
            run.notes.append(f"account {acct} not found through the admin API")
        else:
            run.link(f"{site}/admin/accounts/{account_id}")
            await self._mastodon_steps(
                run,
                verdict,
                sha,
                media.table,
                media.record_id,
                account_id,
                owner.status_id,
                wanted,
                destructive,
                action,
            )
        if not run.failures:
            await self.steps.record(marker, sha, "mastodon", marker, verdict.verdict_id)
        await emit(self._event(verdict, action, ActionType.MODERATE, run))

    async def _mastodon_steps(
        self,
        run: _Run,
        verdict: Verdict,
        sha: str,
        table: str,
        record_id: int,
        account_id: str,
        status_id: str | None,
        wanted: Sequence[str],
        destructive: bool,
        action: EnforcementAction,
    ) -> None:
        assert self.mastodon is not None
        settings = self.settings.mastodon
        site = settings.url
        report_id: str | None = None
        if "report" in wanted:
            target = f"mastodon:report:{table}:{record_id}"
            done = await self.steps.active(target, sha) or await self.steps.holder(target)
            if done is not None:
                # This file, or another style of the same attachment, was reported.
                report_id = done.data.get("report_id")
                run.did("report", "already_done", target=f"account {account_id}")
                if done.content != sha:
                    await self.steps.record(
                        target, sha, "mastodon", "report", verdict.verdict_id, done.data
                    )
            else:
                category = "legal" if verdict.decision is Decision.FLAG_CSAM else "other"
                try:
                    report_id = await self.mastodon.report(
                        account_id,
                        [status_id] if status_id else [],
                        self._reason(verdict),
                        category,
                    )
                except PlatformError as exc:
                    run.fail(f"report on account {account_id}", exc)
                else:
                    run.did("report", target=f"account {account_id}", report_id=report_id)
                    await self.steps.record(
                        target,
                        sha,
                        "mastodon",
                        "report",
                        verdict.verdict_id,
                        {"report_id": report_id, "account_id": account_id},
                    )
            if report_id:
                run.link(f"{site}/admin/reports/{report_id}")
        chosen = next((s for s in wanted if s in MASTODON_ACCOUNT_ACTIONS), None)
        if chosen is None:
            return
        if not destructive:
            run.notes.append(
                f"{chosen} skipped: only a quarantine or delete is followed by an account "
                f"action (this decision's storage action is {action.action.value})"
            )
            return
        if model_only(verdict) and not settings.account_action_model_only:
            run.did(chosen, "refused", target=f"account {account_id}")
            run.notes.append(
                f"{chosen} refused for a model-only verdict "
                "(enforce.platform.mastodon.account_action_model_only)"
            )
            return
        target = f"mastodon:{chosen}:account:{account_id}"
        if await self.steps.active(target, sha) is not None or await self.steps.held_elsewhere(
            target, sha
        ):
            run.did(chosen, "already_done", target=f"account {account_id}")
        else:
            try:
                await self.mastodon.account_action(
                    account_id, chosen, self._reason(verdict), report_id
                )
            except PlatformError as exc:
                run.fail(f"{chosen} of account {account_id}", exc)
                return
            run.did(chosen, target=f"account {account_id}")
        await self.steps.record(
            target, sha, "mastodon", chosen, verdict.verdict_id, {"account_id": account_id}
        )

    # -- undo on restore ---------------------------------------------------------------

    async def _undo(
        self, verdict: Verdict, action: EnforcementAction, ref: ObjectRef, emit: Emit
    ) -> None:
        sha = (action.sha256 or verdict.sha256 or "").lower()
        if not sha:
            return
        if self.mastodon is not None:
            key = self._relative(ref, self.mastodon_locations)
            sha = (mastodon_content(sha, key) if key else None) or sha
        rows = await self.steps.of_content(sha)
        by_system: dict[str, list[Step]] = {}
        for row in rows:
            by_system.setdefault(row.system, []).append(row)
        for system, steps in by_system.items():
            real = [s for s in steps if not s.target.startswith("followup:")]
            run = _Run(system, "undo")
            if system == "pictrs":
                await self._undo_pictrs(real, ref, run)
            elif system == "lemmy":
                await self._undo_lemmy(real, run)
            elif system == "mastodon":
                await self._undo_mastodon(real, run)
            for step in steps:
                if step.target.startswith("followup:"):
                    await self.steps.undo(step.target, sha)
            if real:
                kind = ActionType.REIMPORT if system == "pictrs" else ActionType.MODERATE
                await emit(self._event(verdict, action, kind, run))

    async def _undo_pictrs(self, rows: list[Step], ref: ObjectRef, run: _Run) -> None:
        assert self.pictrs is not None and self.index is not None
        for row in rows:
            aliases = list(row.data.get("aliases", []))
            hex_ = str(row.data.get("hex", ""))
            run.info.update(hash=hex_, aliases=aliases)
            if not self.settings.pictrs.reimport_on_restore:
                run.did("reimport", "skipped", target=f"hash {hex_[:16]}…")
                run.notes.append(
                    "not re-imported (enforce.platform.pictrs.reimport_on_restore is off): the "
                    "restored file is not served by pict-rs"
                )
                await self.steps.undo(row.target, row.content)
                continue
            store = self.stores.for_ref(ref)
            try:
                data = await store.get(ref.key, _MAX_REIMPORT_BYTES)
            except (ObjectMissing, StorageError) as exc:
                run.fail(f"reading the restored {ref.id}", exc)
                continue
            results = []
            try:
                for alias in aliases:
                    results.append(await self.pictrs.import_alias(alias, data))
            except PlatformError as exc:
                run.fail("re-import", exc)
                continue
            bad = [r for r in results if not r.ok]
            for r in bad:
                run.fail(f"re-import of alias {r.alias}", PlatformError(r.detail))
            if bad:
                continue
            run.did("reimport", target=f"hash {hex_[:16]}…", aliases=aliases)
            await self.index.remember(hex_, aliases)
            await self.steps.undo(row.target, row.content)
            # pict-rs stored the import under a new identifier: the restored file at the
            # old key is a copy nothing refers to any more.
            try:
                await store.delete(ref.key)
            except StorageError as exc:
                run.notes.append(f"the restored copy {ref.id} could not be removed: {exc}")
            else:
                run.notes.append(
                    f"pict-rs holds the image again (new storage key); the restored copy at "
                    f"{ref.key} was removed; variants are made again on request; delete tokens "
                    "are new (the uploader's Lemmy delete link no longer works)"
                )

    async def _undo_lemmy(self, rows: list[Step], run: _Run) -> None:
        assert self.lemmy is not None
        site = self.lemmy.site
        for row in rows:
            kind, oid = str(row.data.get("kind", "")), int(row.data.get("id", 0))
            label = f"{kind} {oid}"
            await self.steps.undo(row.target, row.content)
            if await self.steps.held_elsewhere(row.target, row.content):
                run.did(f"un{row.step}", "kept", target=label)
                run.notes.append(f"{row.step} of {label} kept: another flagged image holds it")
                continue
            try:
                if row.step == "report":
                    if row.data.get("report_id"):
                        await self.lemmy.resolve_report(kind, int(row.data["report_id"]))
                    run.did("resolve report", target=label)
                elif row.step == "remove":
                    await self.lemmy.remove(kind, oid, False, "pictguard: restored by an admin")
                    run.did("restore", target=label)
                elif row.step == "ban":
                    await self.lemmy.ban(
                        oid, False, "pictguard: restored by an admin", remove_data=False, days=None
                    )
                    run.did("unban", target=label)
                    if row.data.get("remove_data"):
                        run.notes.append(
                            f"the ban of {label} removed their data; that cannot be undone"
                        )
                else:
                    run.did("unpurge", "impossible", target=label)
                    run.notes.append(f"{label} was purged: Lemmy cannot bring it back")
            except PlatformError as exc:
                run.fail(f"undoing {row.step} of {label}", exc)
                await self.steps.record(
                    row.target, row.content, row.system, row.step, row.verdict_id, row.data
                )
                continue
            if kind in ("post", "comment"):
                run.link(f"{site}/{kind}/{oid}")
        run.link(f"{site}/modlog")

    async def _undo_mastodon(self, rows: list[Step], run: _Run) -> None:
        assert self.mastodon is not None
        site = self.settings.mastodon.url
        for row in rows:
            await self.steps.undo(row.target, row.content)
            account_id = str(row.data.get("account_id", ""))
            try:
                if await self.steps.held_elsewhere(row.target, row.content):
                    run.did(f"undo {row.step}", "kept", target=f"account {account_id}")
                    continue
                if row.step == "report":
                    report_id = str(row.data.get("report_id", ""))
                    if report_id:
                        await self.mastodon.resolve_report(report_id)
                        run.did("resolve report", target=f"report {report_id}")
                        run.link(f"{site}/admin/reports/{report_id}")
                    continue
                await self.mastodon.undo_action(account_id, row.step)
                run.did(f"undo {row.step}", target=f"account {account_id}")
                run.link(f"{site}/admin/accounts/{account_id}")
            except PlatformError as exc:
                run.fail(f"undoing {row.step} of account {account_id}", exc)
                await self.steps.record(
                    row.target, row.content, row.system, row.step, row.verdict_id, row.data
                )
