"""Evidence preservation: rejected uploads are kept, and the retention is checked at start.

pict-rs stores nothing it was told to reject, so without this the bytes of a rejected
upload were gone the moment the API answered. The API now publishes each rejected upload
whose decision's action is ``quarantine`` as an :class:`~pipeline.events.UploadEvidence`
on the ``upload-evidence`` topic (the same path in single-process mode, on the in-process
bus, and distributed, on Kafka, so the API never needs write access to the quarantine);
:class:`UploadKeeper` writes it to the evidence location with the verdict as metadata and
records a ``quarantine`` action without an object (an upload has no original to restore).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import filetype

from enforce.enforcer import Enforcer
from enforce.quarantine import META_PREFIX, Quarantine, QuarantineError, QuarantineSpec
from enforce.settings import EnforceConfig
from pipeline.bus.base import Message
from pipeline.events import (
    ActionOutcome,
    ActionType,
    EnforcementAction,
    ObjectRef,
    SchemaError,
    StoreKind,
    UploadEvidence,
    decode,
    utcnow,
)
from pipeline.retry import retrying
from pipeline.storage import Retention, StorageError, StoreUnavailable
from pipeline.storage.locations import Stores

log = logging.getLogger(__name__)

UPLOADS_PREFIX = "uploads/"
# Below this a retention warning is logged at start: US law asks a year for reported
# content (18 U.S.C. § 2258A(h) as amended in 2024), and 90 days was the old minimum.
MIN_RETENTION_DAYS = 90
# A store that is briefly down is tried again for about this long before giving up.
_RETRY_FOR_S = 60.0


def evidence_spec(settings: EnforceConfig) -> QuarantineSpec:
    """Where rejected uploads go (``enforce.upload_evidence`` or its default)."""
    config = settings.enforce
    if config.upload_evidence:
        spec = QuarantineSpec.parse(config.upload_evidence)
        if spec.kind is None:
            raise QuarantineError(
                f"enforce.upload_evidence = {config.upload_evidence!r}: name a bucket "
                "(s3://bucket/prefix/) or a folder; an upload has no bucket of its own that a "
                "bare prefix could live in"
            )
        return spec
    quarantine = QuarantineSpec.parse(config.quarantine, settings.storage.state_dir)
    if quarantine.kind is not None and not quarantine.default:
        return quarantine
    # The quarantine is a prefix inside each scanned bucket (uploads have none), or the
    # default folder: uploads get a folder of their own beside it.
    root = (Path(settings.storage.state_dir) / "evidence").expanduser().resolve()
    return QuarantineSpec(StoreKind.FILE, str(root), "")


# What the API knew about each kept upload (which pict-rs client, what the platform said),
# for the review console and the evidence package.
UPLOADS_TABLE = """CREATE TABLE IF NOT EXISTS enforce_uploads (
    verdict_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, client_id TEXT,
    content_type TEXT, received_at TEXT NOT NULL, size INTEGER NOT NULL, context TEXT NOT NULL
)"""


def retention_warnings(settings: EnforceConfig) -> list[str]:
    """What start-up says about a retention too short for evidence."""
    days = settings.enforce.quarantine_retention_days
    if days >= MIN_RETENTION_DAYS:
        return []
    return [
        f"enforce.quarantine_retention_days is {days}: quarantined images and rejected uploads "
        f"may be gone before a report is dealt with. US providers must preserve reported "
        "content for 1 year (18 U.S.C. § 2258A(h), REPORT Act 2024); check the law of your "
        f"jurisdiction and keep at least {MIN_RETENTION_DAYS} days (default 365)"
    ]


def upload_key(spec: QuarantineSpec, evidence: UploadEvidence) -> str:
    """``<prefix>uploads/YYYY/MM/DD/<request id><ext>``: one key per upload, by date."""
    day = evidence.created_at.astimezone(UTC).strftime("%Y/%m/%d")
    kind = filetype.guess(evidence.content[:8192])
    ext = f".{kind.extension}" if kind is not None else ""
    return f"{spec.prefix}{UPLOADS_PREFIX}{day}/{evidence.verdict.request_id}{ext}"


class UploadKeeper:
    """Writes rejected uploads to the evidence location and records the action."""

    def __init__(self, enforcer: Enforcer, settings: EnforceConfig, stores: Stores) -> None:
        self.enforcer = enforcer
        self.settings = settings
        self.spec = evidence_spec(settings)
        config = enforcer.config
        self.location = Quarantine(
            stores,
            self.spec,
            retention_days=config.quarantine_retention_days,
            lock_mode=config.quarantine_lock_mode,
        )
        assert self.spec.kind is not None and self.spec.root is not None
        self.store = stores.open(self.spec.kind, self.spec.root)

    async def start(self) -> list[str]:
        """Check the evidence location like the quarantine (private, lockable); warn."""
        await self.enforcer.state.execute(UPLOADS_TABLE)
        warnings = (await self.location.check()).warnings
        for warning in warnings:
            self.enforcer.quarantine_warnings.append(warning)
            await self.enforcer.alert_exposed(warning)
        return warnings

    async def keep(self, evidence: UploadEvidence) -> EnforcementAction | None:
        """Write one rejected upload and record it; None if it was kept before (a replay)."""
        verdict = evidence.verdict
        if await self._kept_before(verdict.verdict_id):
            return None
        key = upload_key(self.spec, evidence)
        ref = ObjectRef(
            store=self.store.kind, bucket=self.store.location, key=key, size=len(evidence.content)
        )
        client = evidence.client_id or "unknown client"
        try:
            await self._write(evidence, key)
        except StorageError as exc:
            log.error(
                "could not keep a rejected upload as evidence",
                extra={"verdict_id": verdict.verdict_id, "where": ref.id, "error": str(exc)},
            )
            action = self._action(
                evidence, ActionOutcome.FAILED, None, f"keeping the rejected upload failed: {exc}"
            )
        else:
            action = self._action(
                evidence,
                ActionOutcome.DONE,
                ref,
                f"rejected upload (pict-rs client {client}) kept as evidence",
            )
        await self.enforcer.state.execute(
            "INSERT OR IGNORE INTO enforce_uploads (verdict_id, request_id, client_id, "
            "content_type, received_at, size, context) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                verdict.verdict_id,
                verdict.request_id,
                evidence.client_id,
                evidence.content_type,
                evidence.created_at.astimezone(UTC).isoformat(),
                len(evidence.content),
                json.dumps(evidence.context, sort_keys=True),
            ),
        )
        await self.enforcer.record(verdict, action)
        return action

    async def _kept_before(self, verdict_id: str) -> bool:
        row = await self.enforcer.state.fetchone(
            "SELECT 1 FROM actions WHERE verdict_id = ? AND action = 'quarantine' "
            "AND object_id IS NULL AND outcome = 'done' LIMIT 1",
            (verdict_id,),
        )
        return row is not None

    async def _write(self, evidence: UploadEvidence, key: str) -> None:
        now = utcnow()
        metadata = self._metadata(evidence, now)
        retain = self.enforcer.config.quarantine_retention_days
        async for attempt in retrying(
            lambda exc: isinstance(exc, StoreUnavailable),
            first_s=1.0,
            max_s=15.0,
            give_up_after_s=_RETRY_FOR_S,
        ):
            with attempt:
                await self.store.put(key, evidence.content, metadata)
                if retain > 0 and await self.location.lockable(self.store):
                    until = now + timedelta(days=retain)
                    mode = self.enforcer.config.quarantine_lock_mode
                    await self.store.retain(key, Retention(until, mode))

    def _metadata(self, evidence: UploadEvidence, now: datetime) -> dict[str, str]:
        verdict = evidence.verdict
        metadata = {
            f"{META_PREFIX}verdict-id": verdict.verdict_id,
            f"{META_PREFIX}decision": verdict.decision.value,
            f"{META_PREFIX}scores": json.dumps(
                {k: round(v, 4) for k, v in sorted(verdict.scores.items())}, separators=(",", ":")
            ),
            f"{META_PREFIX}upload-request": verdict.request_id,
            f"{META_PREFIX}received-at": evidence.created_at.astimezone(UTC).isoformat(),
            f"{META_PREFIX}quarantined-at": now.astimezone(UTC).isoformat(),
        }
        if verdict.sha256:
            metadata[f"{META_PREFIX}sha256"] = verdict.sha256
        if verdict.matched:
            metadata[f"{META_PREFIX}matched"] = quote(verdict.matched, safe="")
        if evidence.content_type:
            metadata[f"{META_PREFIX}content-type"] = evidence.content_type
        if evidence.client_id:
            metadata[f"{META_PREFIX}upload-client"] = quote(evidence.client_id, safe="")
        for name, value in sorted(evidence.context.items())[:8]:
            # S3 metadata is ASCII and small: the platform's fields, quoted and capped.
            metadata[f"{META_PREFIX}upload-{quote(name, safe='')[:32]}"] = quote(value, safe="")[
                :256
            ]
        return metadata

    def _action(
        self,
        evidence: UploadEvidence,
        outcome: ActionOutcome,
        copy: ObjectRef | None,
        detail: str,
    ) -> EnforcementAction:
        verdict = evidence.verdict
        return EnforcementAction(
            verdict_id=verdict.verdict_id,
            object=None,
            decision=verdict.decision,
            action=ActionType.QUARANTINE,
            outcome=outcome,
            # Kept even in a dry run: the API rejected the upload whatever enforce does, and
            # keeping a copy deletes and moves nothing.
            dry_run=False,
            detail=detail,
            quarantine=copy,
            sha256=verdict.sha256,
            scores=verdict.scores,
        )


class EvidenceStage:
    """Consumes ``upload-evidence`` and keeps each upload (one at a time: they are rare)."""

    def __init__(self, keeper: UploadKeeper) -> None:
        self.keeper = keeper

    async def handle(self, batch: Sequence[Message]) -> None:
        """Keep every upload in ``batch``; returns once each action is recorded."""
        for message in batch:
            try:
                evidence = decode(message.value, UploadEvidence)
            except SchemaError as exc:
                # Not dead-lettered: the payload may be an image that must not be copied
                # into the dead-letter topic or the state file.
                log.error(
                    "dropping a malformed upload-evidence record",
                    extra={"topic": message.topic, "error": str(exc)},
                )
                continue
            await self.keeper.keep(evidence)
