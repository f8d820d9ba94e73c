"""What a notification says: one JSON payload, rendered as text for chat and email.

Payloads carry bucket, key, decision, scores, action and verdict id — never image bytes,
and a link only when the admin set ``include_links`` and a ``link_template``.

Object keys are chosen by whoever uploads, so the text forms never trust them: every value
is put on one line (:func:`pipeline.logs.printable`), and each chat channel escapes the text
for its own markup (:func:`slack_text`, :func:`discord_text`, :func:`matrix_html`) so a key
can neither mention anyone nor draw a link.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape as html_escape
from typing import Any
from urllib.parse import quote

from enforce.settings import NotifySettings, Severity
from pipeline.events import ActionOutcome, Decision, EnforcementAction, ErrorReason, utcnow
from pipeline.logs import printable

DIGEST_ITEMS = 20


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell admins; ``dedupe_key`` makes repeats (same verdict) silent."""

    dedupe_key: str
    severity: Severity
    payload: Mapping[str, Any]
    urgent: bool = False  # alerts skip the digest and go out at once
    created: float = field(default=0.0, compare=False)


# Error verdicts about content that is simply not there: nothing went unscanned.
_QUIET_ERRORS = frozenset({ErrorReason.NOT_FOUND, ErrorReason.EMPTY})


def severity_of(action: EnforcementAction) -> Severity:
    """CSAM is critical; nsfw, failures, held actions and content that could not be
    scanned (unsupported or corrupt, over a limit, a model failure) are warnings, so the
    default channels carry them; the rest (an object gone before its scan) is info."""
    if action.decision is Decision.FLAG_CSAM:
        return Severity.CRITICAL
    if action.decision is Decision.FLAG_NSFW or action.outcome in (
        ActionOutcome.FAILED,
        ActionOutcome.HELD,
    ):
        return Severity.WARNING
    if action.decision is Decision.ERROR and action.reason not in _QUIET_ERRORS:
        return Severity.WARNING
    return Severity.INFO


def action_notice(action: EnforcementAction, settings: NotifySettings) -> Notice:
    """The notice for one enforcement action, deduplicated by its verdict id."""
    obj = action.object
    payload: dict[str, Any] = {
        "event": "action",
        "instance": settings.instance,
        "severity": severity_of(action).value,
        "verdict_id": action.verdict_id,
        "action_id": action.action_id,
        "bucket": obj.bucket if obj else None,
        "key": obj.key if obj else None,
        "object": obj.id if obj else None,
        "decision": action.decision.value,
        "scores": {k: round(v, 4) for k, v in sorted(action.scores.items())},
        "action": action.action.value,
        "outcome": action.outcome.value,
        "dry_run": action.dry_run,
        "detail": action.detail,
        "sha256": action.sha256,
        "quarantine": action.quarantine.id if action.quarantine else None,
        "time": action.created_at.isoformat(),
    }
    if action.reason is not None:
        payload["reason"] = action.reason.value  # why an error verdict is one
    if action.platform is not None:
        # Ids on pict-rs/Lemmy/Mastodon and links to their moderation pages (never the image).
        payload["platform"] = action.platform
    if settings.include_links and settings.link_template and obj is not None:
        # Quoted: a key must not end the URL early or add a query of its own.
        payload["link"] = settings.link_template.format(
            bucket=quote(obj.bucket, safe=""),
            key=quote(obj.key, safe="/"),
            object=quote(obj.id, safe="/:"),
            verdict_id=action.verdict_id,
            quarantine=action.quarantine.id if action.quarantine else "",
        )
    # One message per verdict and step: a replayed verdict stays silent, while a held
    # action's release or a later restore is news.
    step = "held" if action.outcome is ActionOutcome.HELD else "final"
    if action.platform is not None:
        step = f"{action.platform.get('system')}:{action.platform.get('phase')}"
    key = f"verdict:{action.verdict_id}:{action.action.value}:{step}"
    return Notice(key, severity_of(action), payload)


def alert_notice(
    event: str, dedupe_key: str, summary: str, settings: NotifySettings, **fields: Any
) -> Notice:
    """An urgent, critical message about pictguard itself (guard tripped, exposure)."""
    payload = {
        "event": event,
        "instance": settings.instance,
        "severity": Severity.CRITICAL.value,
        "summary": summary,
        "time": utcnow().isoformat(),
        **fields,
    }
    return Notice(dedupe_key, Severity.CRITICAL, payload, urgent=True)


# What to look at, per reason an upload was accepted without a verdict.
UNVERIFIED_HINTS = {
    "timeout": "no verdict by api.deadline_s: is classify running and keeping up?",
    "unavailable": "the broker or classify was unreachable",
    "overload": "more than api.max_inflight uploads at once (api.on_overload: accept)",
    "error": "could not classify (corrupt or unsupported; `pictguard audit --decision error`)",
    "video": "pictguard does not classify video (api.video: accept)",
}
UNVERIFIED_NEXT_STEP = (
    "these uploads are kept by pict-rs unscanned; they are looked at only when a rescan "
    "source (bucket notifications, ingest.watch, ingest.reconcile) or `pictguard scan` "
    "classifies them from storage. Fix the cause, or set the api.on_timeout / on_error / "
    "video / on_overload policy to reject"
)


def unverified_notice(
    counts: Mapping[str, int],
    first: datetime,
    last: datetime,
    dedupe_key: str,
    settings: NotifySettings,
) -> Notice:
    """A warning: ``counts`` uploads (per reason) were accepted without a verdict between
    ``first`` and ``last``."""
    total = sum(counts.values())
    reasons = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    listed = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
    first, last = first.astimezone(UTC), last.astimezone(UTC)
    until = f"{last:%H:%M:%S}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M:%S}"
    summary = (
        f"{total} upload{'s' if total != 1 else ''} accepted without a verdict ({listed}) "
        f"between {first:%Y-%m-%d %H:%M:%S} and {until} UTC"
    )
    hints = [UNVERIFIED_HINTS[r] for r in reasons if r in UNVERIFIED_HINTS]
    payload = {
        "event": "unverified_accepts",
        "instance": settings.instance,
        "severity": Severity.WARNING.value,
        "summary": summary,
        "count": total,
        "reasons": reasons,
        "since": first.isoformat(),
        "until": last.isoformat(),
        "time": utcnow().isoformat(),
        "next_step": "; ".join([*hints, UNVERIFIED_NEXT_STEP]),
    }
    return Notice(dedupe_key, Severity.WARNING, payload)


def digest_payload(notices: Sequence[Notice], instance: str) -> dict[str, Any]:
    """Many notices as one payload: counts by decision/action/outcome and the first few."""
    counts: Counter[str] = Counter()
    for notice in notices:
        p = notice.payload
        what = (p.get("decision", p["event"]), p.get("action", "-"), p.get("outcome", "-"))
        counts["/".join(map(str, what))] += 1
    top = max((n.severity for n in notices), key=lambda s: s.rank)
    return {
        "event": "digest",
        "instance": instance,
        "severity": top.value,
        "count": len(notices),
        "counts": dict(counts.most_common()),
        "items": [dict(n.payload) for n in notices[:DIGEST_ITEMS]],
        "time": utcnow().isoformat(),
    }


def _scores(scores: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in scores.items()) or "no scores"


def render_line(payload: Mapping[str, Any]) -> str:
    """One line about one action or alert (control characters in values escaped)."""
    return printable(_line(payload))


def _line(payload: Mapping[str, Any]) -> str:
    if payload["event"] != "action":
        return str(payload.get("summary", payload["event"]))
    where = payload.get("object") or "inline upload (not stored)"
    reason = f" ({payload['reason']})" if payload.get("reason") else ""
    text = (
        f"{payload['decision']}{reason} → {payload['action']} ({payload['outcome']}): {where} "
        f"[{_scores(payload.get('scores', {}))}] verdict {payload['verdict_id']}"
    )
    if payload.get("detail"):
        text += f" — {payload['detail']}"
    if payload.get("link"):
        text += f" {payload['link']}"
    links = (payload.get("platform") or {}).get("links") or []
    if links:
        text += " " + " ".join(links)
    return text


def render_subject(payload: Mapping[str, Any]) -> str:
    """A one-line subject for email (never a CR or LF: no header can be added through it)."""
    return printable(_subject(payload))


def _subject(payload: Mapping[str, Any]) -> str:
    severity = str(payload["severity"]).upper()
    if payload["event"] == "digest":
        return f"{severity}: {payload['count']} enforcement events on {payload['instance']}"
    if payload["event"] == "action":
        return f"{severity}: {payload['decision']} → {payload['action']} on {payload['instance']}"
    return f"{severity}: {payload.get('summary', payload['event'])}"


def render_text(payload: Mapping[str, Any]) -> str:
    """Plain text for chat rooms and email bodies: one line per item, values on one line."""
    head = printable(f"[{str(payload['severity']).upper()}] pictguard {payload['instance']}: ")
    if payload["event"] != "digest":
        text = head + render_line(payload)
        if payload.get("next_step"):
            text += "\nNext step: " + printable(str(payload["next_step"]))
        return text
    lines = [head + f"{payload['count']} enforcement events"]
    lines += [f"  {count} × {what}" for what, count in payload["counts"].items()]
    items = payload["items"]
    lines.append(f"First {len(items)}:")
    lines += [f"  - {render_line(item)}" for item in items]
    lines.append("Full list: pictguard audit --since 1h")
    return "\n".join(lines)


# Mentions: a zero-width space after "@" keeps @everyone, @here, @channel, @room and
# @user from being read as one by any client, whatever the channel's own settings.
_MENTION = "@\u200b"


def slack_text(text: str) -> str:
    """``text`` for Slack/Mattermost/Rocket.Chat mrkdwn: ``&<>`` escaped as Slack asks, so
    ``<!channel>`` or ``<https://…|label>`` in a key stays text, and no @-mention."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("@", _MENTION)


# Everything Discord's markdown gives a meaning to, links ([label](url)) and mentions
# (<@id>, <#id>) included.
_DISCORD_MARKUP = str.maketrans({c: "\\" + c for c in "\\*_~`|>[]()<#-"})


def discord_text(text: str) -> str:
    """``text`` for a Discord message: markdown escaped with backslashes, no @-mention (the
    sender also sets ``allowed_mentions`` to none)."""
    return text.translate(_DISCORD_MARKUP).replace("@", _MENTION)


def matrix_html(text: str) -> str:
    """``text`` as the HTML ``formatted_body`` of a Matrix message: escaped, lines kept."""
    return html_escape(text, quote=True).replace("\n", "<br>")


def matrix_plain(text: str) -> str:
    """The plain ``body`` of a Matrix message: no @room or @user mention."""
    return text.replace("@", _MENTION)
