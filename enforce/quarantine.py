"""Quarantine: move a flagged object aside with its verdict as metadata, and put it back.

The quarantine location is one of:

- ``s3://bucket/prefix/`` — a bucket of its own (best: lock it down and enable object lock);
- a folder path (``/srv/quarantine``, ``./quarantine``, ``~/q``, ``file:///srv/q``);
- a bare prefix (``quarantine/``) — inside the same bucket or folder as the flagged object.

The quarantined key is the original key under the prefix, so an admin finds it by name.
On one S3 endpoint the copy is server-side and keeps the Content-Type; object-lock
retention (``enforce.quarantine_retention_days``) is set on the copy where the bucket has
object lock enabled. The original's user metadata and
Content-Type ride along in the copy's metadata, so a restore is byte- and header-identical.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.events import ObjectRef, StoreKind, Verdict
from pipeline.storage import LocationNotFound, ObjectMissing, ObjectStore, StorageError
from pipeline.storage.locations import Stores, parse_location
from pipeline.storage.s3 import S3Store

log = logging.getLogger(__name__)

META_PREFIX = "pictguard-"
_ALL_USERS = {
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
}
# S3 allows 2 KiB of user metadata in all; the original's own metadata gets what is left.
_MAX_CARRIED_METADATA = 1024
# Copies between different stores pass through memory; media objects are far smaller.
_MAX_COPY_BYTES = 2**32


# Locations already said to be unlockable, so that each process says it once.
_TOLD_UNLOCKABLE: set[tuple[StoreKind, str]] = set()


class QuarantineError(StorageError):
    """The quarantine location cannot be used as configured."""


@dataclass(frozen=True, slots=True)
class QuarantineSpec:
    """The parsed ``enforce.quarantine`` setting."""

    kind: StoreKind | None  # None: same store as the flagged object
    root: str | None
    prefix: str

    @classmethod
    def parse(cls, text: str) -> QuarantineSpec:
        """Parse the setting; raises :class:`QuarantineError` for an unsupported scheme."""
        text = text.strip()
        if text.startswith("s3://") or text.startswith("file://") or _looks_like_path(text):
            location = parse_location(text)
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

    def describe(self) -> str:
        """The location in words, for status output."""
        if self.kind is None:
            return f"'{self.prefix}' inside each scanned bucket/folder"
        if self.kind is StoreKind.S3:
            return f"s3://{self.root}/{self.prefix}"
        return str(Path(self.root or ".") / self.prefix)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


class Quarantine:
    """Moves objects into the quarantine location and back."""

    def __init__(
        self,
        stores: Stores,
        spec: QuarantineSpec,
        *,
        retention_days: int = 0,
        lock_mode: str = "GOVERNANCE",
    ) -> None:
        self.stores = stores
        self.spec = spec
        self.retention_days = retention_days
        self.lock_mode = lock_mode
        self._checked: set[tuple[StoreKind, str]] = set()
        self._lockable: dict[tuple[StoreKind, str], bool] = {}

    # -- where -------------------------------------------------------------------------

    def target(self, ref: ObjectRef) -> tuple[ObjectStore, ObjectRef]:
        """The store and reference the quarantined copy of ``ref`` gets."""
        if self.spec.kind is None or self.spec.root is None:
            kind, root = ref.store, ref.bucket
        else:
            kind, root = self.spec.kind, self.spec.root
        store = self.stores.open(kind, root)
        return store, ObjectRef(store=kind, bucket=store.location, key=self.spec.prefix + ref.key)

    def contains(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` already lies inside the quarantine location."""
        _, target = self.target(ref.model_copy(update={"key": ""}))
        return (
            ref.store is target.store
            and ref.bucket == target.bucket
            and ref.key.startswith(self.spec.prefix)
        )

    # -- move and restore --------------------------------------------------------------

    async def move(self, ref: ObjectRef, verdict: Verdict, now: datetime) -> ObjectRef:
        """Copy ``ref`` into quarantine with the verdict as metadata, then delete it.

        Raises :class:`ObjectMissing` if the original is gone before the copy, and a
        :class:`StorageError` if the copy fails (the original is then left untouched) or
        the delete fails (the copy is then already in quarantine).
        """
        source = self.stores.for_ref(ref)
        target_store, target_ref = self.target(ref)
        await self._check_once(target_store)
        content_type, original_meta = await _original_headers(source, ref.key)
        metadata = {
            f"{META_PREFIX}verdict-id": verdict.verdict_id,
            f"{META_PREFIX}decision": verdict.decision.value,
            f"{META_PREFIX}scores": json.dumps(
                {k: round(v, 4) for k, v in sorted(verdict.scores.items())}, separators=(",", ":")
            ),
            f"{META_PREFIX}original": quote(ref.id, safe="/:"),
            f"{META_PREFIX}quarantined-at": now.astimezone(UTC).isoformat(),
        }
        if verdict.sha256:
            metadata[f"{META_PREFIX}sha256"] = verdict.sha256
        if content_type:
            metadata[f"{META_PREFIX}content-type"] = content_type
        carried = json.dumps(original_meta, separators=(",", ":"))
        if original_meta and len(carried) <= _MAX_CARRIED_METADATA:
            metadata[f"{META_PREFIX}original-metadata"] = carried
        elif original_meta:
            log.warning(
                "original user metadata too large to keep with the quarantined copy",
                extra={"object": ref.id, "bytes": len(carried)},
            )
        retain_until = (
            now + timedelta(days=self.retention_days)
            if self.retention_days > 0 and await self.lockable(target_store)
            else None
        )
        await _copy(
            source,
            ref.key,
            target_store,
            target_ref.key,
            metadata,
            content_type=content_type,
            retain_until=retain_until,
            lock_mode=self.lock_mode,
        )
        await source.delete(ref.key)
        return target_ref

    async def lockable(self, store: ObjectStore) -> bool:
        """Whether copies in ``store`` can carry a retention (an S3 bucket with object lock).

        Elsewhere the retention is kept by policy only: pictguard deletes nothing by itself,
        but the store does not stop an admin who does.
        """
        where = (store.kind, store.location)
        if where not in self._lockable:
            locked = isinstance(store, S3Store) and await _s3_object_lock_enabled(store)
            self._lockable[where] = locked
            if not locked and self.retention_days > 0 and where not in _TOLD_UNLOCKABLE:
                _TOLD_UNLOCKABLE.add(where)
                # A bucket could have object lock and has not: worth a warning. A folder
                # never can: a fact, said once.
                log.log(
                    logging.WARNING if isinstance(store, S3Store) else logging.INFO,
                    "quarantine_retention_days is %d but %s cannot lock copies (%s): they are "
                    "kept, not locked against deletion",
                    self.retention_days,
                    store.location,
                    "no object lock on the bucket" if isinstance(store, S3Store) else "a folder",
                )
        return self._lockable[where]

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
        await _copy(
            qstore,
            quarantined.key,
            target,
            original.key,
            {str(k): str(v) for k, v in original_meta.items()},
            content_type=content_type,
            retain_until=None,
            lock_mode=self.lock_mode,
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

    # -- exposure checks ---------------------------------------------------------------

    async def check(self) -> list[str]:
        """Warnings about the configured quarantine location (public, lock, missing).

        A bare prefix lives in whichever bucket is scanned; each such bucket is checked
        the first time something is quarantined into it.
        """
        if self.spec.kind is None or self.spec.root is None:
            return []
        store = self.stores.open(self.spec.kind, self.spec.root)
        self._checked.add((store.kind, store.location))
        return await self._check_store(store)

    async def _check_once(self, store: ObjectStore) -> None:
        if (store.kind, store.location) in self._checked:
            return
        self._checked.add((store.kind, store.location))
        await self._check_store(store)

    async def _check_store(self, store: ObjectStore) -> list[str]:
        warnings: list[str] = []
        try:
            if isinstance(store, S3Store):
                await store.check()
                warnings = await s3_public_findings(store, self.spec.prefix)
            else:
                warnings = await asyncio.to_thread(
                    folder_public_findings, Path(store.location), self.spec.prefix
                )
            # Not an exposure: logged once (see lockable), not alerted.
            await self.lockable(store)
        except StorageError as exc:
            warnings.append(f"cannot check quarantine location {store.location}: {exc}")
        for warning in warnings:
            log.error("QUARANTINE LOCATION CHECK: %s", warning)
        return warnings


async def _original_headers(store: ObjectStore, key: str) -> tuple[str | None, dict[str, str]]:
    """Content-Type and user metadata of the original (S3 only keeps a Content-Type)."""
    if isinstance(store, S3Store):
        client = await store.connection.client()
        try:
            head = await client.head_object(Bucket=store.location, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise store.connection.translate(exc, store.location, key) from None
        return head.get("ContentType"), dict(head.get("Metadata", {}))
    if await store.head(key) is None:
        raise ObjectMissing(f"{store.location}/{key} does not exist")
    return None, await store.metadata(key)


async def _copy(
    source: ObjectStore,
    key: str,
    target: ObjectStore,
    target_key: str,
    metadata: Mapping[str, str],
    *,
    content_type: str | None,
    retain_until: datetime | None,
    lock_mode: str,
) -> None:
    if (
        isinstance(source, S3Store)
        and isinstance(target, S3Store)
        and source.connection is target.connection
    ):
        await _s3_copy(source, key, target, target_key, metadata, content_type)
    elif isinstance(target, S3Store) and content_type:
        # The generic copy would upload without a Content-Type; media servers need it.
        data = await source.get(key, max_bytes=_MAX_COPY_BYTES)
        client = await target.connection.client()
        try:
            await client.put_object(
                Bucket=target.location,
                Key=target_key,
                Body=data,
                Metadata=dict(metadata),
                ContentType=content_type,
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise target.connection.translate(exc, target.location, target_key) from None
    else:
        await source.copy_to(key, target, target_key, metadata)
    if retain_until is not None and isinstance(target, S3Store):
        # A separate call (not lock headers on the copy): stores differ in which checksum
        # headers they demand on a locked copy, and a failed lock leaves the original alone.
        await _s3_lock(target, target_key, retain_until, lock_mode)


async def _s3_copy(
    source: S3Store,
    key: str,
    target: S3Store,
    target_key: str,
    metadata: Mapping[str, str],
    content_type: str | None,
) -> None:
    client = await source.connection.client()
    kwargs: dict[str, Any] = {
        "Bucket": target.location,
        "Key": target_key,
        "CopySource": {"Bucket": source.location, "Key": key},
        "Metadata": dict(metadata),
        # REPLACE is needed to set our metadata; it would reset Content-Type, so pass it.
        "MetadataDirective": "REPLACE",
    }
    if content_type:
        kwargs["ContentType"] = content_type
    try:
        await client.copy_object(**kwargs)
    except (ClientError, BotoCoreError, OSError) as exc:
        error = source.connection.translate(exc, source.location, key)
        if isinstance(error, LocationNotFound):
            # Either bucket may be the missing one; name the target if it is.
            await target.check()
        raise error from None


async def _s3_lock(store: S3Store, key: str, until: datetime, mode: str) -> None:
    client = await store.connection.client()
    try:
        await client.put_object_retention(
            Bucket=store.location, Key=key, Retention={"Mode": mode, "RetainUntilDate": until}
        )
    except (ClientError, BotoCoreError, OSError) as exc:
        raise store.connection.translate(exc, store.location, key) from None


async def _s3_object_lock_enabled(store: S3Store) -> bool:
    client = await store.connection.client()
    try:
        r = await client.get_object_lock_configuration(Bucket=store.location)
    except ClientError:
        return False
    except (BotoCoreError, OSError) as exc:
        raise store.connection.translate(exc, store.location) from None
    return r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def original_of(metadata: Mapping[str, str]) -> ObjectRef | None:
    """The original object a quarantined copy came from, read from its metadata."""
    text = metadata.get(f"{META_PREFIX}original")
    if not text:
        return None
    return ref_from_id(unquote(text))


def ref_from_id(text: str) -> ObjectRef | None:
    """Parse an object id (``s3://bucket/key`` or ``file:///root/key``) back into a ref.

    A ``file://`` id cannot say where the root ends, so callers pass the quarantine or
    scan root separately where that matters; here the last path segment is the key.
    """
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        if len(bucket) >= 3 and key:
            return ObjectRef(store=StoreKind.S3, bucket=bucket, key=key)
        return None
    if text.startswith("file://"):
        root, _, key = text[len("file://") :].rpartition("/")
        if key:
            return ObjectRef(store=StoreKind.FILE, bucket=root or "/", key=key)
    return None


# -- public-exposure checks ----------------------------------------------------------------


async def s3_public_findings(store: S3Store, prefix: str) -> list[str]:
    """Why the bucket (or its prefix) may be readable by anyone; empty if it looks private.

    Checks what the store can tell: the public access block (all four flags on means
    private whatever else is set), the bucket policy (policy status where supported, else
    a read of the policy), and the bucket ACL. Stores that support none of these (Garage,
    some MinIO setups) yield no finding.
    """
    client = await store.connection.client()
    bucket = store.location
    findings: list[str] = []

    async def call(name: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await getattr(client, name)(Bucket=bucket, **kwargs)
            return result
        except ClientError:
            return None  # not configured, or not implemented by this store

    block = await call("get_public_access_block")
    if block is not None:
        flags = block.get("PublicAccessBlockConfiguration", {})
        if all(
            flags.get(f)
            for f in (
                "BlockPublicAcls",
                "IgnorePublicAcls",
                "BlockPublicPolicy",
                "RestrictPublicBuckets",
            )
        ):
            return []
    status = await call("get_bucket_policy_status")
    if status is not None and status.get("PolicyStatus", {}).get("IsPublic"):
        findings.append(f"bucket '{bucket}' has a bucket policy that makes it public")
    elif status is None:
        policy = await call("get_bucket_policy")
        if policy is not None and _policy_allows_public_read(
            policy.get("Policy", ""), bucket, prefix
        ):
            findings.append(
                f"bucket '{bucket}' has a bucket policy allowing anonymous s3:GetObject"
            )
    acl = await call("get_bucket_acl")
    for grant in (acl or {}).get("Grants", []):
        grantee = grant.get("Grantee", {})
        if grantee.get("URI") in _ALL_USERS and grant.get("Permission") in ("READ", "FULL_CONTROL"):
            findings.append(
                f"bucket '{bucket}' ACL grants {grant.get('Permission')} to "
                f"{grantee['URI'].rsplit('/', 1)[-1]}"
            )
    return [
        f"quarantine location s3://{bucket}/{prefix} is publicly readable: {f} — make the "
        "quarantine bucket private (block public access) or quarantined images stay reachable"
        for f in findings
    ]


def _policy_allows_public_read(text: str, bucket: str, prefix: str) -> bool:
    try:
        policy = json.loads(text)
    except ValueError:
        return False
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for st in statements:
        if st.get("Effect") != "Allow" or st.get("Condition"):
            continue
        principal = st.get("Principal")
        if not (
            principal == "*"
            or (isinstance(principal, dict) and principal.get("AWS") in ("*", ["*"]))
        ):
            continue
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("*", "s3:*", "s3:GetObject") for a in actions):
            continue
        resources = st.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        target = f"arn:aws:s3:::{bucket}/{prefix}"
        for resource in resources:
            pattern = str(resource)
            if (
                pattern == "*"
                or (pattern.endswith("*") and target.startswith(pattern[:-1]))
                or (pattern.endswith("*") and pattern[:-1].startswith(target))
            ):
                return True
    return False


def folder_public_findings(root: Path, prefix: str) -> list[str]:
    """Why a quarantine folder may be readable by other local users; creates it private."""
    folder = root / prefix
    if not folder.exists():
        # Created here, it starts private; a later put would create it with the umask.
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        return []
    mode = folder.stat().st_mode
    if mode & stat.S_IROTH:
        return [
            f"quarantine folder {folder} is world-readable (mode {stat.filemode(mode)}) — "
            f"run chmod o-rwx {folder}"
        ]
    return []
