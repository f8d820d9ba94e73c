"""Evidence packages for a report to the authorities: ``pictguard evidence export``.

A package is a folder (or a zip) with, per item: ``report.json`` laid out along the
NCMEC CyberTipline report (incident summary, reported person, file details with the
original file hashes; see docs/evidence.md for the field mapping), the verdict, the
enforcement and review audit trails, the hashes (md5, sha1, sha256, PDQ) and — only with
``include_file`` — the file itself. A ``MANIFEST.sha256`` covers every file of the package.

pictguard never sends a report. A verdict that only a model made (no hash list matched)
is exported only after a reviewer confirmed it, unless the admin insists.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pdqhash

from enforce.admin import AdminError, NotFound
from enforce.records import Records
from enforce.review.images import MAX_PIXELS, PreviewError, first_frame
from enforce.review.items import ReviewItem, ReviewQueue
from enforce.review.journal import Journal, MarkRow, ReviewEvent
from pipeline.events import Decision, utcnow
from pipeline.hashlists import HashListStore
from pipeline.state.sqlite import SqliteState
from pipeline.state.table import Table
from pipeline.storage import ObjectMissing, StorageError
from pipeline.storage.locations import Stores

FORMAT = "pictguard-evidence/1"
_MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024
# CyberTipline incident type for apparent child sexual abuse material.
INCIDENT_CSAM = "Child Pornography (possession, manufacture, and distribution)"
NOTICE = (
    "Prepared by pictguard for a person to file a report. pictguard sends nothing to anyone. "
    "A verdict made by a model alone (no hash-list match) must be confirmed by a human "
    "before it is reported. Check the law of your jurisdiction on reporting and preservation."
)


class ExportRefused(AdminError):
    """An item cannot be exported as asked; the message says what to do."""


@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path
    items: list[str] = field(default_factory=list)
    files_included: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    item: ReviewItem
    folder: str
    files: dict[str, bytes]


def _version() -> str:
    try:
        return metadata.version("pictguard")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_hashes(data: bytes) -> dict[str, str]:
    """md5, sha1 and sha256 of the file, as CyberTipline's originalFileHash takes them."""
    return {
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def pdq_of(data: bytes) -> tuple[str, int] | None:
    """PDQ (64 hex) and quality of an image, or None if it cannot be decoded."""
    try:
        image = first_frame(data, 512)
    except PreviewError:
        return None
    if image.width * image.height > MAX_PIXELS:
        return None
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image), dtype=np.uint8))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


class EvidenceExporter:
    """Builds evidence packages from the state store and the stores."""

    def __init__(self, state: SqliteState, stores: Stores, hashlists: Table | None = None) -> None:
        self.state = state
        self.stores = stores
        self.journal = Journal(state)
        self.records = Records(state)
        self.queue = ReviewQueue(
            state, self.journal, HashListStore(hashlists or state.table("hashlists"))
        )

    async def resolve(self, targets: Iterable[str]) -> list[ReviewItem]:
        """The items that item ids, verdict ids or sha256s name (each at most once)."""
        await self.records.start()
        await self.journal.start()
        every = await self.queue.items("all", limit=1_000_000)
        chosen: dict[str, ReviewItem] = {}
        for target in targets:
            text = target.strip().lower()
            found = [
                i for i in every if text in (i.item_id, i.verdict_id) or (i.sha256 or "") == text
            ]
            if not found:
                raise NotFound(
                    f"nothing flagged matches {target!r}: give an item id (from the review "
                    "console), a verdict id or a sha256"
                )
            for item in found:
                chosen.setdefault(item.item_id, item)
        return list(chosen.values())

    async def export(
        self,
        targets: Iterable[str],
        out: Path,
        *,
        exporter: str,
        include_file: bool = False,
        as_zip: bool = False,
        allow_unconfirmed: bool = False,
    ) -> ExportResult:
        """Write one package for ``targets`` under ``out``; record the export in the audit."""
        items = await self.resolve(targets)
        for item in items:
            if item.model_only and item.status != "confirmed" and not allow_unconfirmed:
                raise ExportRefused(
                    f"item {item.item_id} was flagged by a model alone and no reviewer has "
                    "confirmed it: confirm it in the review console first (or pass "
                    "--allow-unconfirmed after checking it yourself)"
                )
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        name = f"pictguard-evidence-{stamp}"
        result = ExportResult(
            out / (name + (".zip" if as_zip else "")), files_included=include_file
        )
        entries = [await self._entry(item, include_file, exporter, result) for item in items]
        files = {
            f"{name}/{entry.folder}/{path}": data
            for entry in entries
            for path, data in entry.files.items()
        }
        files[f"{name}/README.txt"] = _readme(entries, include_file).encode()
        manifest = "".join(
            f"{hashlib.sha256(data).hexdigest()}  {path.split('/', 1)[1]}\n"
            for path, data in sorted(files.items())
        )
        files[f"{name}/MANIFEST.sha256"] = manifest.encode()
        await asyncio.to_thread(_write, out, files, result.path if as_zip else None)
        if not as_zip:
            result.path = out / name
        for entry in entries:
            item = entry.item
            await self.journal.record(
                exporter,
                ReviewEvent.EXPORT,
                item_id=item.item_id,
                verdict_id=item.verdict_id,
                sha256=item.sha256,
                detail={"include_file": include_file, "package": str(result.path)},
            )
            result.items.append(item.item_id)
        return result

    async def _entry(
        self, item: ReviewItem, include_file: bool, exporter: str, result: ExportResult
    ) -> _Entry:
        data, missing = await self._bytes(item)
        hashes: dict[str, Any] = {"sha256": item.sha256}
        if data is not None:
            hashes.update(file_hashes(data))
            if item.sha256 and hashes["sha256"] != item.sha256:
                result.warnings.append(
                    f"{item.item_id}: the stored bytes hash to {hashes['sha256']}, the verdict "
                    f"said {item.sha256}"
                )
        verdict = item.verdict
        if verdict is not None and verdict.pdq:
            hashes["pdq"] = {"value": verdict.pdq, "quality": verdict.pdq_quality, "by": "verdict"}
        elif data is not None:
            computed = await asyncio.to_thread(pdq_of, data)
            if computed is not None:
                hashes["pdq"] = {"value": computed[0], "quality": computed[1], "by": "export"}
        if missing:
            result.warnings.append(f"{item.item_id}: {missing}")
        actions = await self.records.actions(verdict_id=item.verdict_id, limit=10_000)
        review = await self.journal.audit(
            item_id=item.item_id, verdict_id=item.verdict_id, limit=100_000
        )
        marks = await self.journal.marks_for_verdict(item.verdict_id)
        revealed = [r for r in review if r.event == ReviewEvent.REVEAL.value]
        report = _report(item, hashes, marks, bool(revealed), exporter, missing)
        files = {
            "report.json": _json(report),
            "verdict.json": _json(
                verdict.model_dump(mode="json", exclude_none=True) if verdict else {}
            ),
            "audit.json": _json(
                {
                    "actions": [
                        a.model_dump(mode="json", exclude_none=True) for a in reversed(actions)
                    ],
                    "review": [r.as_json() for r in reversed(review)],
                }
            ),
            "hashes.txt": "".join(
                f"{k.upper()}  {v['value'] if isinstance(v, dict) else v}\n"
                for k, v in hashes.items()
                if v
            ).encode(),
        }
        if include_file:
            if data is None:
                result.warnings.append(f"{item.item_id}: --include-file, but {missing}")
            else:
                files[f"file/{_file_name(item)}"] = data
        return _Entry(item, f"item-{item.item_id}", files)

    async def _bytes(self, item: ReviewItem) -> tuple[bytes | None, str | None]:
        ref = item.bytes_ref
        if ref is None:
            return None, "no stored copy is known"
        try:
            return await self.stores.for_ref(ref).get(ref.key, max_bytes=_MAX_FILE_BYTES), None
        except ObjectMissing:
            return None, f"the stored copy {ref.id} is gone; hashes come from the verdict"
        except StorageError as exc:
            return None, f"the stored copy {ref.id} cannot be read ({exc})"


def _file_name(item: ReviewItem) -> str:
    name = PurePosixPath(item.key).name or item.item_id
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:120]


def _report(
    item: ReviewItem,
    hashes: dict[str, Any],
    marks: list[MarkRow],
    viewed: bool,
    exporter: str,
    missing: str | None,
) -> dict[str, Any]:
    verdict = item.verdict
    obj = item.action.object
    confirmed = next((m for m in marks if m.status.value == "confirmed"), None)
    original_hashes = [
        {"hashType": name.upper(), "value": hashes[name]}
        for name in ("md5", "sha1", "sha256")
        if hashes.get(name)
    ]
    details = []
    if "pdq" in hashes:
        details.append({"type": "HASH", "name": "PDQ", "value": hashes["pdq"]["value"]})
    location = obj.id if obj is not None else None
    uploader = item.uploader
    posts = item.post_urls
    incident_time = (verdict.created_at if verdict else item.when).astimezone(UTC)
    when_text = (
        "when pictguard received the upload for validation (pict-rs rejected it)"
        if item.kind == "upload"
        else "when pictguard scanned the stored object (the upload itself may be earlier)"
    )
    return {
        "format": FORMAT,
        "generated_at": utcnow().isoformat(),
        "generated_by": exporter,
        "pictguard_version": _version(),
        "notice": NOTICE,
        "item": {
            "id": item.item_id,
            "kind": item.kind,
            "status": item.status,
            "decision": item.decision,
            "why": item.why,
            "hash_list_match": item.list_match,
            "model_only": item.model_only,
        },
        "human_review": {
            "confirmed": confirmed is not None,
            "reviewer": confirmed.reviewer if confirmed else None,
            "at": confirmed.at.isoformat() if confirmed else None,
            "reason": confirmed.reason if confirmed else None,
            "file_viewed_unblurred": viewed,
        },
        "source": {
            "store": obj.store.value
            if obj
            else (item.bytes_ref.store.value if item.bytes_ref else None),
            "bucket": obj.bucket if obj else None,
            "key": obj.key if obj else None,
            "object": location,
            "kept_copy": item.bytes_ref.id if item.bytes_ref else None,
            "upload_client": item.raw.get("client_id"),
            "uploader": uploader,
            "uploader_id": item.uploader_id,
            "posts": posts,
            "platform_links": item.platform_links,
            "stored_copy_missing": missing,
        },
        "hashes": hashes,
        # Laid out as the CyberTipline report and file-details sections name their fields
        # (docs/evidence.md); what pictguard cannot know is left null for the reporter.
        "cybertipline": {
            "incidentSummary": {
                "incidentType": INCIDENT_CSAM if item.decision == Decision.FLAG_CSAM else None,
                "incidentDateTime": incident_time.isoformat(),
                "incidentDateTimeDescription": when_text,
            },
            "internetDetails": [{"webPageIncident": {"url": posts}}] if posts else [],
            "reporter": {
                "reportingPerson": {"firstName": None, "lastName": None, "email": None},
                "note": "filled in by the person filing the report",
            },
            "personOrUserReported": (
                {
                    "espIdentifier": item.uploader_id,
                    "screenName": uploader,
                    "profileUrl": [item.profile_url] if item.profile_url else [],
                    "ipCaptureEvent": [],
                }
                if uploader
                else None
            ),
            "fileDetails": {
                "fileName": _file_name(item),
                "originalFileName": PurePosixPath(obj.key).name if obj else None,
                "locationOfFile": location,
                "fileViewedByEsp": viewed,
                "publiclyAvailable": None if item.kind != "upload" else False,
                "fileRelevance": "Reported",
                "originalFileHash": original_hashes,
                "details": details,
                "additionalInfo": [f"pictguard: {item.why}"],
            },
            "additionalInfo": NOTICE,
        },
    }


def _readme(entries: list[_Entry], include_file: bool) -> str:
    lines = [
        "pictguard evidence package",
        "",
        NOTICE,
        "",
        "Per item folder: report.json (fields laid out as the NCMEC CyberTipline report and "
        "file details; see docs/evidence.md), verdict.json, audit.json (enforcement actions "
        "and the review audit: views, reveals, decisions), hashes.txt"
        + (", file/ (the file itself)." if include_file else ". The file itself is NOT included."),
        "MANIFEST.sha256 lists the sha256 of every file in this package.",
        "",
        "Items:",
    ]
    for entry in entries:
        item = entry.item
        lines.append(
            f"  {entry.folder}: {item.decision} {item.key} "
            f"({'hash-list match' if item.list_match else 'model only'}; {item.status})"
        )
    return "\n".join(lines) + "\n"


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _write(out: Path, files: dict[str, bytes], zip_path: Path | None) -> None:
    """Write the package privately (owner-only permissions)."""
    out.mkdir(parents=True, exist_ok=True)
    if zip_path is not None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, data in sorted(files.items()):
                archive.writestr(path, data)
        fd = os.open(zip_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        return
    for root in {path.split("/", 1)[0] for path in files}:
        (out / root).mkdir(mode=0o700)
    for path, data in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
