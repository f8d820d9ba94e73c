"""Quarantine: move a flagged object aside with its verdict as metadata, and put it back.

The quarantine location (``enforce.quarantine``) is one of:

- unset (the default): the private folder ``quarantine/`` under ``storage.state_dir``:
  never inside a scanned bucket or media folder, so nothing quarantined is served by a
  media server or scanned again;
- ``s3://bucket/prefix/``: a bucket of its own (best: private, with object lock);
- a folder path (``/srv/quarantine``, ``./quarantine``, ``~/q``, ``file:///srv/q``);
- a bare prefix (``quarantine/``): inside the same bucket or folder as the flagged object;
  only if that bucket is private there.

A quarantined copy's key names where it came from, ``<prefix><store>/<bucket>/<key>``
(``s3/media/aa/bb.webp``, ``file/srv/media/2024/pic.jpg``), so objects of two buckets
never meet, and a copy is never overwritten: a second incident of the same key gets a
versioned name. The copy carries the verdict, the original's id, Content-Type and user
metadata, so a restore is byte- and header-identical. Object-lock retention
(``enforce.quarantine_retention_days``) is set on the copy where the bucket has object lock
enabled; elsewhere the copy is kept, not locked (said once per location). Nothing is put
into a location that is readable by the public, or whose exposure cannot be established
(:mod:`pipeline.storage.exposure`): the check runs at start-up and again every
``enforce.quarantine_recheck_s`` while quarantining.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from pipeline.events import ObjectRef, StoreKind, Verdict
from pipeline.retry import retrying
from pipeline.storage import (
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    Retention,
    StorageError,
    StoreUnavailable,
)
from pipeline.storage.base import LockMode
from pipeline.storage.exposure import Exposure, ExposureReport, exposure
from pipeline.storage.locations import Location, Stores, parse_location, parse_object_id

log = logging.getLogger(__name__)

META_PREFIX = "pictguard-"
# S3 allows 2 KiB of user metadata in all; the original's own metadata gets what is left.
_MAX_CARRIED_METADATA = 1024
_DEFAULT_FOLDER = "quarantine"
# How long start-up keeps trying an unreachable quarantine store before refusing.
_START_CHECK_S = 30.0
# Locations already said to be unlockable, so that each process says it once.
_TOLD_UNLOCKABLE: set[tuple[StoreKind, str]] = set()


class QuarantineError(StorageError):
    """The quarantine location cannot be used as configured."""


class QuarantineExposed(QuarantineError):
    """The quarantine location is readable by the public, or that cannot be ruled out."""

    def __init__(self, report: ExposureReport, *, starting: bool = False) -> None:
        self.report = report
        if starting:
            text = (
                f"refusing to quarantine: quarantine location {report.message()}; until then "
                "nothing can be quarantined there (or run with --dry-run, or set "
                "enforce.quarantine to a private location)"
            )
        else:
            text = (
                f"quarantine location {report.message()}; nothing is moved there until it "
                "is private, then run `pictguard enforce resume`"
            )
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class QuarantineSpec:
    """The parsed ``enforce.quarantine`` setting."""

    kind: StoreKind | None  # None: same store as the flagged object
    root: str | None
    prefix: str
    default: bool = False  # unset: the folder under storage.state_dir

    @classmethod
    def parse(cls, text: str | None, state_dir: Path | None = None) -> QuarantineSpec:
        """Parse the setting; raises :class:`QuarantineError` for an unsupported scheme.

        Unset (None or empty) means the private folder ``quarantine/`` under ``state_dir``.
        """
        text = (text or "").strip()
        if not text:
            folder = (state_dir or Path(".pictguard")).expanduser().resolve() / _DEFAULT_FOLDER
            return cls(StoreKind.FILE, str(folder), "", default=True)
        if text.startswith("s3://") or text.startswith("file://") or _looks_like_path(text):
            try:
                location = parse_location(text)
            except StorageError as exc:
                raise QuarantineError(f"enforce.quarantine: {exc}") from None
            prefix = location.prefix
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            return cls(location.kind, location.root, prefix)
        if "://" in text:
            raise QuarantineError(
                f"enforce.quarantine = {text!r}: use s3://bucket/prefix/, a folder path, or a "
                "bare prefix such as quarantine/"
            )
        prefix = text.lstrip("/")
        return cls(None, None, prefix if prefix.endswith("/") else prefix + "/")

    @property
    def location(self) -> Location | None:
        """The fixed location, or None for a bare prefix (one in every store)."""
        if self.kind is None or self.root is None:
            return None
        return Location(self.kind, self.root, self.prefix)

    def describe(self) -> str:
        """The location in words, for status output."""
        if self.kind is None:
            return f"'{self.prefix}' inside each scanned bucket/folder"
        if self.kind is StoreKind.S3:
            return f"s3://{self.root}/{self.prefix}"
        folder = str(Path(self.root or ".") / self.prefix)
        if self.default:
            return f"{folder} (private folder under storage.state_dir)"
        return folder


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def quarantine_key(ref: ObjectRef) -> str:
    """Where under the quarantine prefix ``ref``'s copy goes: unique per source location.

    ``s3/<bucket>/<key>`` or ``file/<root without its leading slash>/<key>``; segments a
    folder would fold away (``..``, ``.``, empty) are percent-encoded.
    """
    root = ref.bucket.strip("/") if ref.store is StoreKind.FILE else ref.bucket
    parts = [ref.store.value, *root.split("/"), *ref.key.split("/")]
    return "/".join(quote(p, safe="") if p in ("", ".", "..") else p for p in parts)


@dataclass
class QuarantineCheck:
    """What the start-up check found: one exposure report per location, and warnings."""

    reports: list[ExposureReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def refusal(self) -> ExposureReport | None:
        """The first location that forbids quarantining (public or not established)."""
        return next((r for r in self.reports if r.refuses), None)


class Quarantine:
    """Moves objects into the quarantine location and back."""

    def __init__(
        self,
        stores: Stores,
        spec: QuarantineSpec,
        *,
        retention_days: int = 0,
        lock_mode: LockMode = "GOVERNANCE",
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stores = stores
        self.spec = spec
        self.retention_days = retention_days
        self.lock_mode: LockMode = lock_mode
        self.recheck_s = recheck_s
        self._clock = clock
        self._checked: dict[tuple[StoreKind, str, str], tuple[float, ExposureReport]] = {}
        self._lockable: dict[tuple[StoreKind, str], bool] = {}

    def describe(self) -> str:
        """One line for summaries and status: ``quarantine goes to …``."""
        return f"quarantine goes to {self.spec.describe()}"

    # -- where -------------------------------------------------------------------------

    def store_for(self, ref: ObjectRef) -> ObjectStore:
        """The store that holds the quarantine location for ``ref``."""
        if self.spec.kind is None or self.spec.root is None:
            return self.stores.for_ref(ref)
        return self.stores.open(self.spec.kind, self.spec.root)

    def target(self, ref: ObjectRef) -> tuple[ObjectStore, ObjectRef]:
        """The store and (first-choice) reference the quarantined copy of ``ref`` gets."""
        store = self.store_for(ref)
        key = self.spec.prefix + quarantine_key(ref)
        return store, ObjectRef(store=store.kind, bucket=store.location, key=key)

    def contains(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` already lies inside the quarantine location."""
        location = self.spec.location
        if location is None:
            return ref.key.startswith(self.spec.prefix)
        return location.contains(ref.store, ref.bucket, ref.key)

    def _candidates(self, ref: ObjectRef, verdict_id: str) -> list[ObjectRef]:
        """The names ``ref``'s copy may have, in order: the plain one, then versions."""
        _, base = self.target(ref)
        path = PurePosixPath(base.key)
        suffix = "".join(path.suffixes[-1:])
        stem = base.key[: len(base.key) - len(suffix)] if suffix else base.key
        keys = [base.key, f"{stem}.{verdict_id[:12]}{suffix}", f"{stem}.{verdict_id}{suffix}"]
        return [base.model_copy(update={"key": k}) for k in dict.fromkeys(keys)]

    # -- exposure ------------------------------------------------------------------------

    async def check(self, locations: Sequence[Location] = ()) -> QuarantineCheck:
        """Check the quarantine location (start-up): public or not, object lock.

        A bare prefix lives in whichever bucket is scanned: it is checked in each of
        ``locations`` (the allowed locations), and in any other on first use.
        """
        result = QuarantineCheck()
        stores: list[ObjectStore] = []
        if self.spec.location is not None:
            stores.append(self.stores.open(self.spec.location.kind, self.spec.location.root))
        else:
            stores.extend(self.stores.for_location(loc) for loc in locations)
            if not stores:
                result.warnings.append(
                    f"quarantine goes to '{self.spec.prefix}' inside whichever bucket or folder "
                    "is scanned; with no storage.allowed_locations each is checked the first "
                    "time something is quarantined into it"
                )
        for store in stores:
            try:
                report = await self._exposure_at_start(store)
            except StorageError as exc:
                report = ExposureReport(
                    self._where(store),
                    Exposure.UNKNOWN,
                    (str(exc),),
                    "check that the quarantine location exists and can be reached",
                )
            result.reports.append(report)
            if not report.private:
                result.warnings.append(f"quarantine location {report.message()}")
            try:
                await self.lockable(store)  # not an exposure: logged once, not alerted
            except StorageError as exc:
                log.warning("cannot check object lock on %s: %s", store.location, exc)
        for warning in result.warnings:
            log.error("QUARANTINE LOCATION CHECK: %s", warning)
        return result

    async def _exposure_at_start(self, store: ObjectStore) -> ExposureReport:
        # A store that is briefly unreachable at start-up (a restart of both, a busy host)
        # gets the same grace as the broker, not an immediate refusal.
        async for attempt in retrying(
            lambda exc: isinstance(exc, StoreUnavailable),
            first_s=1.0,
            max_s=5.0,
            give_up_after_s=_START_CHECK_S,
            on_retry=lambda exc, n, wait: log.warning(
                "checking the quarantine location %s (attempt %d: %s); again in %.0f s",
                store.location,
                n,
                exc,
                wait,
            ),
        ):
            with attempt:
                return await self._exposure(store, fresh=True)
        raise AssertionError("unreachable")  # retrying returns or raises

    async def ensure_private(self, ref: ObjectRef) -> None:
        """Raise :class:`QuarantineExposed` unless ``ref``'s quarantine location is private
        (or its store cannot tell); re-checked every ``recheck_s`` seconds."""
        report = await self._exposure(self.store_for(ref))
        if report.refuses:
            raise QuarantineExposed(report)

    async def _exposure(self, store: ObjectStore, *, fresh: bool = False) -> ExposureReport:
        key = (store.kind, store.location, self.spec.prefix)
        now = self._clock()
        cached = self._checked.get(key)
        if cached is not None and not fresh and now - cached[0] < self.recheck_s:
            return cached[1]
        report = await exposure(store, self.spec.prefix)
        previous = cached[1] if cached else None
        if report.exposure is Exposure.UNSUPPORTED and (previous is None or previous != report):
            log.warning("QUARANTINE LOCATION CHECK: %s", report.message())
        self._checked[key] = (now, report)
        return report

    def _where(self, store: ObjectStore) -> str:
        if store.kind is StoreKind.S3:
            return f"s3://{store.location}/{self.spec.prefix}"
        return f"folder {Path(store.location) / self.spec.prefix}"

    async def lockable(self, store: ObjectStore) -> bool:
        """Whether copies in ``store`` can carry a retention (an S3 bucket with object lock).

        Elsewhere the retention is kept by policy only: pictguard deletes nothing by itself,
        but the store does not stop an admin who does.
        """
        where = (store.kind, store.location)
        if where not in self._lockable:
            locked = store.supports_retention and await store.retention_enabled()
            self._lockable[where] = locked
            if not locked and self.retention_days > 0 and where not in _TOLD_UNLOCKABLE:
                _TOLD_UNLOCKABLE.add(where)
                # A bucket could have object lock and has not: worth a warning. A folder
                # never can: a fact, said once.
                log.log(
                    logging.WARNING if store.supports_retention else logging.INFO,
                    "quarantine_retention_days is %d but %s cannot lock copies (%s): they are "
                    "kept, not locked against deletion",
                    self.retention_days,
                    store.location,
                    "no object lock on the bucket" if store.supports_retention else "a folder",
                )
        return self._lockable[where]

    # -- move and restore --------------------------------------------------------------

    async def move(
        self,
        ref: ObjectRef,
        verdict: Verdict,
        now: datetime,
        current: ObjectInfo | None = None,
    ) -> ObjectRef:
        """Copy ``ref`` into quarantine with the verdict as metadata, then delete it.

        ``current`` is what a HEAD of ``ref`` just said, if the caller has it. Raises
        :class:`QuarantineExposed` (nothing copied) if the location is not private,
        :class:`ObjectMissing` if the original is gone before the copy,
        :class:`pipeline.storage.ObjectChanged` if its eTag is no longer ``ref.etag``, and
        a :class:`StorageError` if the copy fails (the original is then left untouched)
        or the delete fails (the copy is then already in quarantine).
        """
        source = self.stores.for_ref(ref)
        target_store = self.store_for(ref)
        await self.ensure_private(ref)
        info = current or await source.head(ref.key)
        if info is None:
            raise ObjectMissing(f"{ref.id} does not exist")
        original_meta = dict(
            info.metadata if info.metadata is not None else await source.metadata(ref.key)
        )
        copy, present = await self._free(ref, verdict)
        if not present:
            retain = None
            if self.retention_days > 0 and await self.lockable(target_store):
                until = now + timedelta(days=self.retention_days)
                retain = Retention(until, self.lock_mode)
            await source.copy_to(
                ref.key,
                target_store,
                copy.key,
                self._metadata(ref, verdict, now, info.content_type, original_meta),
                content_type=info.content_type,
                if_match=ref.etag or info.etag,
                overwrite=False,
                retention=retain,
            )
        await source.delete(ref.key)
        return copy

    async def _free(self, ref: ObjectRef, verdict: Verdict) -> tuple[ObjectRef, bool]:
        """The name the copy gets, and whether that copy is already there (a move
        interrupted between its copy and its delete); a copy of another incident of the
        same key is never overwritten."""
        store = self.store_for(ref)
        for candidate in self._candidates(ref, verdict.verdict_id):
            if await store.head(candidate.key) is None:
                return candidate, False
            meta = await store.metadata(candidate.key)
            same_verdict = meta.get(f"{META_PREFIX}verdict-id") == verdict.verdict_id
            same_bytes = bool(verdict.sha256) and meta.get(f"{META_PREFIX}sha256") == verdict.sha256
            if same_verdict or same_bytes:
                return candidate, True
        raise QuarantineError(
            f"quarantine copies of {ref.id} already exist under every name tried "
            f"({self._candidates(ref, verdict.verdict_id)[-1].id}); none is overwritten — "
            "restore or remove one"
        )

    def _metadata(
        self,
        ref: ObjectRef,
        verdict: Verdict,
        now: datetime,
        content_type: str | None,
        original_meta: Mapping[str, str],
    ) -> dict[str, str]:
        metadata = {
            f"{META_PREFIX}verdict-id": verdict.verdict_id,
            f"{META_PREFIX}decision": verdict.decision.value,
            f"{META_PREFIX}scores": json.dumps(
                {k: round(v, 4) for k, v in sorted(verdict.scores.items())}, separators=(",", ":")
            ),
            f"{META_PREFIX}original": quote(ref.id, safe="/:"),
            f"{META_PREFIX}quarantined-at": now.astimezone(UTC).isoformat(),
        }
        if ref.store is StoreKind.FILE:
            # A file id does not say where its root ends; the restore needs to know.
            metadata[f"{META_PREFIX}original-root"] = quote(ref.bucket, safe="/")
        if verdict.sha256:
            metadata[f"{META_PREFIX}sha256"] = verdict.sha256
        if content_type:
            metadata[f"{META_PREFIX}content-type"] = content_type
        carried = json.dumps(dict(original_meta), separators=(",", ":"))
        if original_meta and len(carried) <= _MAX_CARRIED_METADATA:
            metadata[f"{META_PREFIX}original-metadata"] = carried
        elif original_meta:
            log.warning(
                "original user metadata too large to keep with the quarantined copy",
                extra={"object": ref.id, "bytes": len(carried)},
            )
        return metadata

    async def find_copy(self, ref: ObjectRef, verdict_id: str) -> ObjectRef | None:
        """``ref``'s quarantined copy: the one of ``verdict_id``, else any copy of it."""
        store = self.store_for(ref)
        found: ObjectRef | None = None
        for candidate in self._candidates(ref, verdict_id):
            if await store.head(candidate.key) is None:
                continue
            meta = await store.metadata(candidate.key)
            if meta.get(f"{META_PREFIX}verdict-id") == verdict_id:
                return candidate
            found = found or candidate
        return found

    async def exists(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` (e.g. a quarantined copy) is present."""
        return await self.stores.for_ref(ref).head(ref.key) is not None

    async def restore(self, quarantined: ObjectRef, original: ObjectRef) -> str | None:
        """Put the quarantined bytes back under the original key; remove the copy.

        Returns a note when the quarantine copy could not be removed (object lock keeps it
        until its retention ends); the original is back either way. Raises
        :class:`ObjectMissing` if there is no quarantined copy.
        """
        qstore = self.stores.for_ref(quarantined)
        target = self.stores.for_ref(original)
        meta = await qstore.metadata(quarantined.key)
        content_type = meta.get(f"{META_PREFIX}content-type")
        try:
            original_meta = json.loads(meta.get(f"{META_PREFIX}original-metadata", "{}"))
        except ValueError:
            original_meta = {}
        await qstore.copy_to(
            quarantined.key,
            target,
            original.key,
            {str(k): str(v) for k, v in original_meta.items()},
            content_type=content_type,
        )
        try:
            await qstore.delete(quarantined.key)
        except StorageError as exc:
            log.warning(
                "restored object, but its quarantine copy stays",
                extra={"quarantine": quarantined.id, "error": str(exc)},
            )
            return f"the quarantine copy {quarantined.id} stays ({exc})"
        return None


def original_of(metadata: Mapping[str, str]) -> ObjectRef | None:
    """The original object a quarantined copy came from, read from its metadata."""
    text = metadata.get(f"{META_PREFIX}original")
    if not text:
        return None
    root = metadata.get(f"{META_PREFIX}original-root")
    try:
        return parse_object_id(unquote(text), [unquote(root)] if root else ())
    except StorageError:
        return None
