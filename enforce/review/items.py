"""The review queue: what pictguard flagged, quarantined or held, built from the audit trail.

An item is one enforcement action an admin may want to check, named by that action's id:

- ``quarantined``: a quarantine copy not restored (a bucket object moved aside);
- ``upload``: a rejected pict-rs upload kept as evidence (no original to restore);
- ``held``: a destructive action the blast-radius guard holds;
- ``flagged``: a flagged object left in place (report-only policy, or a dry run).

Several actions about one object (a rescan, a dry run later enforced) make one item: the
copy in quarantine first, then a held action, then the object in place, newest first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from enforce.review.journal import Journal, Mark, MarkRow
from pipeline.events import EnforcementAction, ObjectRef, Verdict
from pipeline.hashlists import HashListStore
from pipeline.state.sqlite import SqliteState

ItemKind = Literal["quarantined", "upload", "held", "flagged"]
Status = Literal["open", "confirmed", "allowed", "deleted"]
_RANK: dict[str, int] = {"quarantined": 0, "upload": 0, "held": 1, "flagged": 2}
# Keys that name who uploaded an object: from a kept upload's context, or from what the
# platform integration (enforce/platform) recorded in its ``moderate`` actions.
UPLOADER_FIELDS = ("uploader", "uploader_name", "account")


@dataclass
class ReviewItem:
    """One thing to review, with what the reviewer needs to judge it without seeing it."""

    item_id: str
    kind: ItemKind
    action: EnforcementAction
    verdict: Verdict | None
    raw: dict[str, Any] = field(default_factory=dict)  # verdict and action JSON, merged
    status: Status = "open"
    mark: MarkRow | None = None

    @property
    def verdict_id(self) -> str:
        return self.action.verdict_id

    @property
    def decision(self) -> str:
        return self.action.decision.value

    @property
    def sha256(self) -> str | None:
        return self.action.sha256 or (self.verdict.sha256 if self.verdict else None)

    @property
    def when(self) -> datetime:
        return self.action.created_at

    @property
    def bytes_ref(self) -> ObjectRef | None:
        """Where the image's bytes are now: the quarantine copy, or the object in place."""
        if self.kind in ("quarantined", "upload"):
            return self.action.quarantine
        return self.action.object

    @property
    def key(self) -> str:
        """What the admin knows it by: the object's key, or the kept upload's key."""
        if self.action.object is not None:
            return self.action.object.key
        copy = self.action.quarantine
        return copy.key if copy is not None else self.action.verdict_id

    @property
    def source(self) -> str:
        """Where it came from, in words."""
        verdict = self.verdict
        if self.action.object is not None:
            obj = self.action.object
            where = f"s3://{obj.bucket}" if obj.store.value == "s3" else obj.bucket
            how = verdict.source.value if verdict else "scan"
            return f"{where} ({how})"
        client = self.raw.get("client_id")
        return "pict-rs upload" + (f" via client {client}" if client else "")

    @property
    def matched(self) -> str | None:
        return self.verdict.matched if self.verdict else None

    @property
    def list_match(self) -> bool:
        """Whether a hash list (not a model) flagged it: bulk decisions are allowed then."""
        return self.verdict is not None and self.verdict.by_hash_list

    @property
    def model_only(self) -> bool:
        """A model's judgement alone: a human must confirm it before any report."""
        return not self.list_match

    @property
    def why(self) -> str:
        """Which list or model flagged it, and its scores."""
        verdict = self.verdict
        if verdict is None:
            return ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.action.scores.items()))
        parts = []
        if verdict.matched:
            parts.append(verdict.matched)
        elif verdict.classifiers:
            parts.append("model: " + ", ".join(verdict.classifiers))
        if verdict.scores:
            parts.append(", ".join(f"{k} {v:.2f}" for k, v in sorted(verdict.scores.items())))
        if verdict.reason is not None:
            parts.append(verdict.reason.value)
        return "; ".join(parts) or "-"

    @property
    def uploader(self) -> str | None:
        """Who uploaded it, where the platform integration recorded it."""
        return _first(self.raw, UPLOADER_FIELDS)

    @property
    def uploader_id(self) -> str | None:
        """The uploader's id on the platform (Lemmy person id, Mastodon account id)."""
        value = self.raw.get("uploader_id")
        return None if value is None else str(value)

    @property
    def post_urls(self) -> list[str]:
        """Pages of the platform where it was posted (moderation links), where known."""
        return [str(u) for u in self.raw.get("post_urls", [])]

    @property
    def profile_url(self) -> str | None:
        """The uploader's profile page, where known."""
        value = self.raw.get("profile_url")
        return None if value is None else str(value)

    @property
    def platform_links(self) -> list[str]:
        """Every link to the platform's own moderation pages the integration recorded."""
        return [str(u) for u in self.raw.get("platform_links", [])]


def _first(raw: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = raw.get(name)
        if value:
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return None


# Quarantine copies not restored, held actions, and flagged objects left in place.
_CANDIDATES = """
SELECT a.action_id, a.body, v.body, h.resolved_at IS NULL AND h.action_id IS NOT NULL
FROM actions a
LEFT JOIN verdicts v ON v.verdict_id = a.verdict_id
LEFT JOIN enforce_held h ON h.action_id = a.action_id
WHERE a.decision IN ('flag_csam', 'flag_nsfw', 'error')
  AND (
    (a.action = 'quarantine' AND a.outcome IN ('done', 'already_absent')
      AND json_extract(a.body, '$.quarantine') IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM actions r WHERE r.action = 'restore'
        AND r.outcome = 'done' AND r.verdict_id = a.verdict_id
        AND r.object_id IS a.object_id))
    OR (a.outcome = 'held' AND h.resolved_at IS NULL AND h.action_id IS NOT NULL)
    OR (a.object_id IS NOT NULL AND a.decision != 'error' AND (
      (a.action = 'report' AND a.outcome IN ('done', 'dry_run')
        AND json_extract(a.body, '$.quarantine') IS NULL)
      OR (a.action IN ('quarantine', 'delete') AND a.outcome = 'dry_run')))
  )
ORDER BY a.created_at DESC, a.action_id
LIMIT ?
"""
# Objects deleted since (by a reviewer, or by a policy of delete): nothing left to show.
_DELETED = """
SELECT object_id, MAX(created_at) FROM actions
WHERE action = 'delete' AND outcome IN ('done', 'already_absent') AND object_id IS NOT NULL
GROUP BY object_id
"""


class ReviewQueue:
    """Builds review items from the state store."""

    def __init__(self, state: SqliteState, journal: Journal, hashlists: HashListStore) -> None:
        self.state = state
        self.journal = journal
        self.hashlists = hashlists

    async def items(
        self, status: Status | Literal["all"] = "open", *, limit: int = 100, offset: int = 0
    ) -> list[ReviewItem]:
        """Items in ``status``, newest first."""
        every = await self._all()
        chosen = [i for i in every if status == "all" or i.status == status]
        return chosen[offset : offset + limit]

    async def counts(self) -> dict[str, int]:
        """How many items are in each status."""
        counts = {"open": 0, "confirmed": 0, "allowed": 0, "deleted": 0}
        for item in await self._all():
            counts[item.status] += 1
        return counts

    async def item(self, item_id: str) -> ReviewItem | None:
        """One item by id, whatever its status."""
        return next((i for i in await self._all() if i.item_id == item_id), None)

    async def neighbours(self, item_id: str) -> tuple[str | None, str | None]:
        """The open items before and after ``item_id`` in the queue (for j/k and after a
        decision)."""
        ids = [i.item_id for i in await self._all() if i.status == "open" or i.item_id == item_id]
        if item_id not in ids:
            return None, ids[0] if ids else None
        at = ids.index(item_id)
        before = ids[at - 1] if at > 0 else None
        after = ids[at + 1] if at + 1 < len(ids) else None
        return before, after

    async def _all(self, cap: int = 5000) -> list[ReviewItem]:
        rows = await self.state.fetchall(_CANDIDATES, (cap,))
        uploads = await self._uploads()
        platform = await self._platform()
        deleted = {obj: at for obj, at in await self.state.fetchall(_DELETED)}
        chosen: dict[str, ReviewItem] = {}
        for action_id, action_body, verdict_body, held in rows:
            action = EnforcementAction.model_validate_json(action_body)
            verdict = Verdict.model_validate_json(verdict_body) if verdict_body else None
            kind = _kind(action, bool(held))
            if kind is None:
                continue
            if kind in ("held", "flagged") and action.object is not None:
                gone = deleted.get(action.object.id)
                if gone is not None and gone >= action.created_at.isoformat():
                    continue
            raw = {
                **platform.get(action.verdict_id, {}),
                **uploads.get(action.verdict_id, {}),
                **(json.loads(verdict_body) if verdict_body else {}),
                **json.loads(action_body),
            }
            item = ReviewItem(action_id, kind, action, verdict, raw)
            if action.object is not None:
                same = action.object.id
            else:
                same = action.quarantine.id if action.quarantine else action_id
            known = chosen.get(same)
            if known is None or _RANK[kind] < _RANK[known.kind]:
                chosen[same] = item
        items = sorted(chosen.values(), key=lambda i: (i.when, i.item_id), reverse=True)
        marks = await self.journal.marks([i.item_id for i in items])
        allowed = await self._allowlisted({i.sha256 for i in items if i.sha256})
        for item in items:
            item.mark = marks.get(item.item_id)
            if item.mark is not None:
                item.status = item.mark.status.value  # type: ignore[assignment]
            elif item.sha256 in allowed:
                item.status = Mark.ALLOWED.value
        return items

    async def _uploads(self) -> dict[str, dict[str, Any]]:
        """What was known about each kept upload (pict-rs client, platform context)."""
        rows = await self.state.fetchall(
            "SELECT verdict_id, client_id, content_type, received_at, size, context "
            "FROM enforce_uploads"
        )
        return {
            verdict_id: {
                **json.loads(context),
                "client_id": client,
                "content_type": content_type,
                "received_at": received,
                "size": size,
            }
            for verdict_id, client, content_type, received, size, context in rows
        }

    async def _platform(self) -> dict[str, dict[str, Any]]:
        """Per verdict, who uploaded the image and where it was posted, from the platform
        integration's ``moderate`` actions (Lemmy: person and posts; Mastodon: account)."""
        rows = await self.state.fetchall(
            "SELECT verdict_id, json_extract(body, '$.platform') FROM actions "
            "WHERE action = 'moderate' AND json_extract(body, '$.platform') IS NOT NULL "
            "ORDER BY created_at"
        )
        found: dict[str, dict[str, Any]] = {}
        for verdict_id, text in rows:
            info = json.loads(text)
            known = found.setdefault(verdict_id, {"platform_links": []})
            links = [str(u) for u in info.get("links", [])]
            known["platform_links"] = sorted(set(known["platform_links"]) | set(links))
            person = info.get("uploader")
            if isinstance(person, dict) and person.get("name"):
                known["uploader"] = f"{person['name']} ({info.get('system', 'platform')})"
                known["uploader_id"] = person.get("person_id")
            elif info.get("account"):
                known["uploader"] = f"{info['account']} ({info.get('system', 'platform')})"
                known["uploader_id"] = info.get("account_id")
            posts = [u for u in known["platform_links"] if "/post/" in u or "/statuses/" in u]
            if posts:
                known["post_urls"] = posts
            profiles = [u for u in known["platform_links"] if "/u/" in u or "/accounts/" in u]
            if profiles:
                known["profile_url"] = profiles[0]
        return found

    async def _allowlisted(self, hashes: set[str]) -> set[str]:
        found = set()
        for sha in hashes:
            entry = await self.hashlists.get(sha)
            if entry is not None and entry.list == "allow":
                found.add(sha)
        return found


def _kind(action: EnforcementAction, held: bool) -> ItemKind | None:
    if held:
        return "held"
    if action.action.value == "quarantine" and action.outcome.value in ("done", "already_absent"):
        return "quarantined" if action.object is not None else "upload"
    if action.object is not None:
        return "flagged"
    return None
