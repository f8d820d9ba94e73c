"""Admin flows shared by the CLI and the admin API: status, resume, restore, allow, block, audit.

Each flow goes through :class:`enforce.enforcer.Enforcer`, so what an admin does is
published on the ``actions`` topic, recorded in the state store and notified like any
enforcement action.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from enforce.enforcer import Enforcer
from enforce.quarantine import META_PREFIX, original_of
from enforce.settings import EnforceConfig
from pipeline.bus.base import Bus
from pipeline.errors import PictguardError
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    ObjectRef,
    Source,
    StoreKind,
    Verdict,
    new_id,
)
from pipeline.hashlists import EntryHashes, Hasher, HashListStore, sha256_only
from pipeline.state.sqlite import SqliteState
from pipeline.state.table import Table
from pipeline.storage import ObjectMissing, ObjectTooLarge, StorageError
from pipeline.storage.locations import Stores, is_object_id, parse_object_id
from pipeline.timeparse import SinceError, parse_since

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_VERDICT_ID = re.compile(r"^[0-9a-f]{32}$")
# Reading an object to hash it for an allow/block entry: images, not archives.
_MAX_HASH_BYTES = 256 * 1024 * 1024


class AdminError(PictguardError, ValueError):
    """An admin request that cannot be carried out; the message says why and what to try."""

    # Not a broken set-up (2): the request itself cannot be done as asked.
    exit_code = 1


class NotFound(AdminError):
    """Nothing matches the target the admin named."""


@dataclass
class EnforceContext:
    """What the admin flows need; the CLI and the API build it from their settings."""

    settings: EnforceConfig
    stores: Stores
    state: SqliteState
    bus: Bus
    hashlists: Table | None = None  # default: the ``hashlists`` table of ``state``
    # Folders whose files the admin API may name by path (the watched roots); the folders
    # among ``stores.scope``'s allowed locations count too.
    media_roots: Sequence[Path] = ()
    # sha256 + PDQ of an image's bytes (classify's, handed over by the composition root).
    hasher: Hasher = sha256_only


def static_context(
    ctx: EnforceContext,
) -> Callable[[], AbstractAsyncContextManager[EnforceContext]]:
    """A context factory over objects a running process already opened (for the API)."""

    @asynccontextmanager
    async def _open() -> AsyncIterator[EnforceContext]:
        yield ctx

    return _open


@dataclass
class AdminResult:
    """What an admin flow did, for a table in the CLI and JSON in the API."""

    summary: str
    actions: list[EnforcementAction] = field(default_factory=list)
    entry: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The result as the admin API returns it."""
        return {
            "summary": self.summary,
            "actions": [a.model_dump(mode="json", exclude_none=True) for a in self.actions],
            "entry": self.entry,
        }


@dataclass(frozen=True, slots=True)
class _Identified:
    """The image an admin named: its hashes, and the stored object it is, if any."""

    hashes: EntryHashes
    ref: ObjectRef | None  # None: a hash, or a file given only as a sample of the image


class EnforceAdmin:
    """The admin flows over one :class:`EnforceContext`. Use as an async context manager."""

    def __init__(
        self, ctx: EnforceContext, *, dry_run: bool = False, enforcer: Enforcer | None = None
    ) -> None:
        config = ctx.settings.enforce
        if dry_run and not config.dry_run:
            config = config.model_copy(update={"dry_run": True})
        self.ctx = ctx
        self.config = config
        self.dry_run = config.dry_run
        # ``enforcer``: the running enforce stage's, started and stopped by its owner, so an
        # admin action meets the same guard, audit and notifier as the verdicts (a dry run
        # gets one of its own: its config differs).
        self._owned = enforcer is None or enforcer.config is not config
        self.enforcer = (
            Enforcer(ctx.bus, ctx.settings, ctx.stores, ctx.state, config=config)
            if self._owned or enforcer is None
            else enforcer
        )
        self.records = self.enforcer.records
        self.hashlists = HashListStore(ctx.hashlists or ctx.state.table("hashlists"))

    async def __aenter__(self) -> EnforceAdmin:
        if self._owned:
            await self.enforcer.start()
        return self

    def media_roots(self) -> list[str]:
        """Folders whose files are media pictguard may act on (resolved)."""
        roots = [str(r) for r in self.ctx.media_roots]
        roots += [a.root for a in self.ctx.stores.scope.allowed if a.kind is StoreKind.FILE]
        return list(dict.fromkeys(os.path.realpath(Path(r).expanduser()) for r in roots))

    def parse_target(self, target: str) -> ObjectRef | None:
        """The object ``target`` names (a folder's file keyed under its media root or the
        quarantine folder), or None for a sha256 or verdict id."""
        if not is_object_id(target):
            return None
        roots = self.media_roots()
        spec = self.enforcer.quarantine.spec
        if spec.kind is StoreKind.FILE and spec.root:
            roots.append(spec.root)
        try:
            return parse_object_id(target, roots)
        except StorageError as exc:
            raise AdminError(str(exc)) from None

    async def __aexit__(self, *exc: object) -> None:
        if self._owned:
            await self.enforcer.stop()

    # -- guard -------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Guard state, held actions and quarantine warnings."""
        guard = self.enforcer.guard.status()
        config = self.config
        return {
            "dry_run": config.dry_run,
            "policy": {
                "flag_csam": config.on_flag_csam,
                "flag_nsfw": config.on_flag_nsfw,
                "error": config.on_error,
            },
            "quarantine": self.enforcer.quarantine.spec.describe(),
            "quarantine_warnings": self.enforcer.quarantine_warnings,
            "guard": {
                "enabled": guard.enabled,
                "tripped": guard.trip is not None,
                "reason": guard.trip.reason if guard.trip else None,
                "since": guard.trip.since.isoformat() if guard.trip else None,
                "destructive_last_minute": guard.destructive_last_minute,
                "destructive_last_hour": guard.destructive_last_hour,
                "flagged_ratio": guard.flagged_ratio,
                "window": guard.window,
                "limits": config.guard.model_dump(),
            },
            "held": await self.records.count_open_held(),
        }

    async def resume(self, *, discard: bool = False, reason: str = "") -> AdminResult:
        """Clear the guard and release (or discard) every held action."""
        held = await self.records.open_held()
        if self.dry_run:
            verb = "discard" if discard else "release"
            actions = [h.action for h in held]
            return AdminResult(
                f"dry run: would resume the guard and {verb} {len(held)} held action(s)", actions
            )
        released = await self.enforcer.resume(discard=discard, note=reason)
        counts: dict[str, int] = {}
        for action in released.actions:
            counts[action.outcome.value] = counts.get(action.outcome.value, 0) + 1
        was = (
            f"guard resumed ({released.trip.reason})" if released.trip else "guard was not tripped"
        )
        verb = "discarded" if discard else "released"
        detail = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none"
        return AdminResult(
            f"{was}; {len(released.actions)} held action(s) {verb}: {detail}", released.actions
        )

    # -- restore -----------------------------------------------------------------------

    async def restore(self, target: str, *, reason: str = "") -> AdminResult:
        """Restore what ``target`` names: a verdict id, an object id or key, or a sha256."""
        quarantined = await self._quarantined(target)
        if not quarantined:
            raise NotFound(
                f"nothing in quarantine matches {target!r} — give a verdict id, the original "
                "s3://bucket/key (or quarantined key), a key, or a sha256; see `pictguard audit "
                "--action quarantine`"
            )
        actions = [await self.enforcer.restore(q, note=reason) for q in quarantined]
        return AdminResult(_summarise("restored", actions), actions)

    async def _quarantined(self, target: str) -> list[EnforcementAction]:
        target = target.strip()
        if _VERDICT_ID.match(target):
            return await self.records.quarantined(verdict_id=target)
        if _SHA256.match(target):
            return await self.records.quarantined(sha256=target.lower())
        ref = self.parse_target(target)
        if ref is None:
            return await self.records.quarantined(key=target)
        found = await self.records.quarantined(object_id=ref.id)
        if found:
            return found
        # Not in this state file (state lost, or quarantined elsewhere): the copy's own
        # metadata says where it came from.
        action = await self._from_metadata(ref)
        return [action] if action is not None else []

    async def _from_metadata(self, named: ObjectRef) -> EnforcementAction | None:
        ref = await self._known_ref(named)
        candidates = [ref]
        copy = await self.enforcer.quarantine.find_copy(ref, "")
        if copy is not None:
            candidates.append(copy)
        for candidate in candidates:
            store = self.ctx.stores.for_ref(candidate)
            try:
                if await store.head(candidate.key) is None:
                    continue
                meta = await store.metadata(candidate.key)
            except StorageError:
                continue
            original = original_of(meta)
            if original is None:
                continue
            return EnforcementAction(
                verdict_id=meta.get(f"{META_PREFIX}verdict-id", new_id()),
                object=original,
                decision=Decision(meta.get(f"{META_PREFIX}decision", Decision.FLAG_CSAM.value)),
                action=ActionType.QUARANTINE,
                outcome=ActionOutcome.DONE,
                quarantine=candidate,
                sha256=meta.get(f"{META_PREFIX}sha256"),
            )
        return None

    # -- allow and block ---------------------------------------------------------------

    async def allow(self, target: str, *, reason: str, author: str) -> AdminResult:
        """Allowlist the image ``target`` names, restore its quarantined copies, drop holds."""
        _need_reason(reason)
        image = await self._identify(target)
        sha256, pdq, quality = image.hashes.sha256, image.hashes.pdq, image.hashes.pdq_quality
        entry: dict[str, Any] = {
            "list": "allow",
            "sha256": sha256,
            "pdq": pdq,
            "reason": reason,
            "author": author,
        }
        quarantined = await self.records.quarantined(sha256=sha256)
        named = self.parse_target(target.strip())
        object_id = named.id if named is not None else None
        if object_id:
            known = {q.action_id for q in quarantined}
            quarantined += [
                q
                for q in await self.records.quarantined(object_id=object_id)
                if q.action_id not in known
            ]
        held = [
            h
            for h in await self.records.open_held()
            if h.verdict.sha256 == sha256
            or (object_id and h.verdict.object and h.verdict.object.id == object_id)
        ]
        if self.dry_run:
            return AdminResult(
                f"dry run: would allowlist {sha256}, restore {len(quarantined)} quarantined "
                f"object(s) and discard {len(held)} held action(s)",
                list(quarantined),
                entry,
            )
        stored = await self.hashlists.add(
            sha256=sha256,
            pdq=pdq,
            pdq_quality=quality,
            list="allow",
            reason=reason,
            author=author,
        )
        actions = [await self.enforcer.restore(q, note=f"allowed: {reason}") for q in quarantined]
        actions += [
            await self.enforcer.release(h, discard=True, note=f"allowed: {reason}") for h in held
        ]
        return AdminResult(
            f"allowlisted {sha256}; " + _summarise("restored/discarded", actions),
            actions,
            stored.model_dump(mode="json", exclude_none=True),
        )

    async def block(
        self,
        target: str,
        *,
        reason: str,
        author: str,
        category: Literal["csam", "nsfw"] = "csam",
    ) -> AdminResult:
        """Blocklist the image ``target`` names and act on every known copy of it now.

        The known copies are stored objects pictguard has a verdict for with this sha256,
        and ``target`` itself when it is a stored object (``s3://…``, or a file pictguard
        scanned). A file it never scanned is only a sample of the image: it is hashed
        (sha256 and PDQ), never moved — the admin's evidence copy stays where it is.
        """
        _need_reason(reason)
        image = await self._identify(target)
        sha256, pdq, quality = image.hashes.sha256, image.hashes.pdq, image.hashes.pdq_quality
        entry: dict[str, Any] = {
            "list": "block",
            "sha256": sha256,
            "pdq": pdq,
            "category": category,
            "reason": reason,
            "author": author,
        }
        refs: dict[str, ObjectRef] = {}
        if image.ref is not None:
            refs[image.ref.id] = image.ref
        for verdict in await self._verdicts_with(sha256):
            if verdict.object is not None:
                refs.setdefault(verdict.object.id, verdict.object)
        if not self.dry_run:
            stored = await self.hashlists.add(
                sha256=sha256,
                pdq=pdq,
                pdq_quality=quality,
                list="block",
                reason=reason,
                author=author,
                category=category,
            )
            entry = stored.model_dump(mode="json", exclude_none=True)
        decision = Decision.FLAG_CSAM if category == "csam" else Decision.FLAG_NSFW
        actions = []
        for obj in refs.values():
            if await self.ctx.stores.for_ref(obj).head(obj.key) is None:
                continue
            verdict = Verdict(
                request_id=new_id(),
                source=Source.API,
                object=obj,
                decision=decision,
                sha256=sha256,
                pdq=pdq,
                pdq_quality=quality,
                matched="blocklist:admin",
                classifiers=["hashlist"],
                detail=f"blocked by {author}: {reason}",
            )
            action = await self.enforcer.enforce(verdict)
            if action is not None:
                actions.append(action)
        prefix = "dry run: would blocklist" if self.dry_run else "blocklisted"
        sample = ""
        if image.ref is None and is_object_id(target.strip()):
            sample = f"; {target.strip()} was only hashed and stays where it is"
        return AdminResult(
            f"{prefix} {sha256} ({category}); " + _summarise("acted on", actions) + sample,
            actions,
            entry,
        )

    async def _verdicts_with(self, sha256: str) -> list[Verdict]:
        return await self.records.verdicts_with(sha256)

    async def _identify(self, target: str) -> _Identified:
        """The hashes of the image ``target`` names, and the stored object it is."""
        target = target.strip()
        if _SHA256.match(target):
            sha = target.lower()
            verdict = await self.records.latest_verdict_for(sha256=sha)
            return _Identified(_hashes_of(verdict, sha), None)
        named = self.parse_target(target)
        if named is None:
            raise AdminError(
                f"{target!r} is neither a sha256 (64 hex digits) nor an object "
                "(s3://bucket/key or a file path)"
            )
        verdict = await self.records.latest_verdict_for(object_id=named.id)
        if verdict is None:
            for q in await self.records.quarantined(object_id=named.id):
                verdict = await self.records.verdict(q.verdict_id)
                if verdict is not None:
                    break
        if verdict is not None and verdict.sha256:
            # An object pictguard scanned: stored media, whatever store it is in.
            return _Identified(_hashes_of(verdict, verdict.sha256), verdict.object or named)
        if named.store is StoreKind.FILE:
            # A file pictguard never scanned: a sample of the image, read and hashed only.
            return _Identified(await self._hash(await self._read_file(named)), None)
        # A stored object never scanned here: hash its bytes (or its quarantined copy's).
        try:
            head = await self.ctx.stores.for_ref(named).head(named.key)
        except StorageError as exc:
            raise AdminError(f"cannot read {named.id} to hash it: {exc}") from None
        if head is not None:
            live = named.model_copy(update={"etag": head.etag, "size": head.size})
            return _Identified(await self._hash(await self._read(live)), live)
        copy = await self.enforcer.quarantine.find_copy(named, "")
        if copy is not None:
            return _Identified(await self._hash(await self._read(copy)), None)
        try:
            await self.ctx.stores.for_ref(named).check()  # a missing bucket says so
        except StorageError as exc:
            raise AdminError(str(exc)) from None
        raise NotFound(f"{target!r} does not exist and no verdict about it is recorded")

    async def _read(self, ref: ObjectRef) -> bytes:
        try:
            return await self.ctx.stores.for_ref(ref).get(ref.key, _MAX_HASH_BYTES)
        except ObjectMissing:
            raise NotFound(f"{ref.id} does not exist any more") from None
        except StorageError as exc:
            raise AdminError(f"cannot read {ref.id} to hash it: {exc}") from None

    async def _read_file(self, ref: ObjectRef) -> bytes:
        path = Path(ref.bucket) / ref.key

        def read() -> bytes:
            with path.open("rb") as f:
                data = f.read(_MAX_HASH_BYTES + 1)
            if len(data) > _MAX_HASH_BYTES:
                raise ObjectTooLarge(str(path), len(data), _MAX_HASH_BYTES)
            return data

        try:
            return await asyncio.to_thread(read)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{path} does not exist and no verdict about it is recorded") from None
        except (OSError, StorageError) as exc:
            raise AdminError(f"cannot read {path} to hash it: {exc}") from None

    async def _hash(self, data: bytes) -> EntryHashes:
        return await asyncio.to_thread(self.ctx.hasher, data)

    async def _known_ref(self, named: ObjectRef) -> ObjectRef:
        """``named`` as a recorded verdict names it (its root, eTag), else as given."""
        verdict = await self.records.latest_verdict_for(object_id=named.id)
        if verdict is not None and verdict.object is not None:
            return verdict.object
        return named

    # -- audit -------------------------------------------------------------------------

    async def audit(
        self,
        *,
        since: str | None = None,
        decision: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        limit: int = 200,
    ) -> list[EnforcementAction]:
        """Recorded actions, newest first, filtered as asked."""
        try:
            moment = parse_since(since) if since else None
        except SinceError as exc:
            raise AdminError(str(exc)) from None
        return await self.records.actions(
            since=moment,
            decision=_enum(Decision, decision, "--decision"),
            action=_enum(ActionType, action, "--action"),
            outcome=_enum(ActionOutcome, outcome, "--outcome"),
            limit=limit,
        )


def _enum(kind: Any, value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise AdminError(f"{option} {value!r}: allowed values are {allowed}") from None


def _need_reason(reason: str) -> None:
    if not reason.strip():
        raise AdminError("give a reason (--reason): it is kept with the hash list entry")


def _hashes_of(verdict: Verdict | None, sha256: str) -> EntryHashes:
    if verdict is None:
        return EntryHashes(sha256)
    return EntryHashes(sha256, verdict.pdq, verdict.pdq_quality)


def _summarise(verb: str, actions: list[EnforcementAction]) -> str:
    if not actions:
        return f"nothing {verb}"
    counts: dict[str, int] = {}
    for a in actions:
        counts[f"{a.action.value} {a.outcome.value}"] = (
            counts.get(f"{a.action.value} {a.outcome.value}", 0) + 1
        )
    return f"{verb}: " + ", ".join(f"{n} × {k}" for k, n in sorted(counts.items()))
