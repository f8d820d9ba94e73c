"""Notifications delivered to real loopback receivers: webhook, Matrix, Slack, Discord, SMTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import unquote

from enforce.notify import Notifier, action_notice, alert_notice, verify
from enforce.settings import NotifySettings
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    ErrorReason,
    ObjectRef,
    StoreKind,
)
from pipeline.state.sqlite import SqliteState
from tests.enforce.receivers import http_receiver, smtp_receiver

FAST = {"retry_initial_s": 0, "retry_max_s": 0, "digest_interval_s": 0}
SECRET = "s3cret-0123456789abcdef"


def action(
    key: str = "aa/bb/cc.jpg",
    decision: Decision = Decision.FLAG_CSAM,
    verdict_id: str = "v" * 32,
    outcome: ActionOutcome = ActionOutcome.DONE,
) -> EnforcementAction:
    return EnforcementAction(
        verdict_id=verdict_id,
        object=ObjectRef(store=StoreKind.S3, bucket="media", key=key),
        decision=decision,
        action=ActionType.QUARANTINE,
        outcome=outcome,
        quarantine=ObjectRef(store=StoreKind.S3, bucket="q-bucket", key=f"q/{key}"),
        sha256="ab" * 32,
        scores={"csam": 0.93, "nsfw": 0.99},
    )


async def notify_all(settings: NotifySettings, *actions: EnforcementAction, **kw: Any) -> None:
    notifier = Notifier(settings, **kw)
    await notifier.start()
    for a in actions:
        await notifier.notify(action_notice(a, settings))
    await notifier.stop()


async def test_webhook_is_signed_and_carries_no_image_or_link() -> None:
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url + "/hook", "secret": SECRET, **FAST}]}
        )
        before = time.time()
        await notify_all(settings, action())
    [request] = rx.requests
    assert request.method == "POST" and request.path == "/hook"
    signature = request.headers["x-pictguard-signature"]
    stamp = request.headers["x-pictguard-timestamp"]
    assert before - 1 <= int(stamp) <= time.time()
    # The README's verification code: HMAC-SHA256 over "<timestamp>.<raw body>".
    signed = stamp.encode() + b"." + request.body
    assert signature == "v1=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert verify(SECRET.encode(), request.body, signature, stamp)
    assert not verify(b"another-secret-0123456789", request.body, signature, stamp)


async def test_a_replayed_webhook_delivery_fails_verification() -> None:
    """The timestamp is signed: a captured delivery is stale later, and cannot be re-dated."""
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, "secret": SECRET, **FAST}]}
        )
        await notify_all(settings, action())
    [request] = rx.requests
    signature = request.headers["x-pictguard-signature"]
    stamp = int(request.headers["x-pictguard-timestamp"])
    body = request.body
    assert verify(SECRET.encode(), body, signature, str(stamp), now=stamp + 299)
    assert not verify(SECRET.encode(), body, signature, str(stamp), now=stamp + 301)  # stale
    later = stamp + 3600
    assert not verify(SECRET.encode(), body, signature, str(later), now=later)  # re-dated
    assert not verify(SECRET.encode(), body, signature, "", now=stamp)
    payload = request.json()
    assert payload["bucket"] == "media" and payload["key"] == "aa/bb/cc.jpg"
    assert payload["decision"] == "flag_csam" and payload["action"] == "quarantine"
    assert payload["scores"] == {"csam": 0.93, "nsfw": 0.99}
    assert payload["verdict_id"] == "v" * 32
    assert payload["severity"] == "critical"
    assert "link" not in payload
    assert "http" not in request.body.decode()


async def test_webhook_retries_with_backoff_until_delivered() -> None:
    with http_receiver(statuses=[500, 503]) as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, "secret": SECRET, **FAST}]}
        )
        await notify_all(settings, action())
    assert [r.headers["x-test-status"] for r in rx.requests] == ["500", "503", "200"]
    # Every attempt is the same event, so a receiver can deduplicate.
    assert len({r.headers["x-pictguard-event-id"] for r in rx.requests}) == 1
    assert len({r.body for r in rx.requests}) == 1


async def test_webhook_refusal_is_not_retried() -> None:
    with http_receiver(statuses=[404]) as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, **FAST}]}
        )
        await notify_all(settings, action())
    assert len(rx.requests) == 1


async def test_links_only_when_asked() -> None:
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {
                "channels": [{"type": "webhook", "url": rx.url, **FAST}],
                "include_links": True,
                "link_template": "https://admin.example/media/{bucket}/{key}",
            }
        )
        await notify_all(settings, action())
    assert rx.requests[0].json()["link"] == "https://admin.example/media/media/aa/bb/cc.jpg"


async def test_matrix_room_message() -> None:
    with http_receiver(statuses=[502]) as rx:
        settings = NotifySettings.model_validate(
            {
                "channels": [
                    {
                        "type": "matrix",
                        "homeserver": rx.url + "/",
                        "room_id": "!room:example.org",
                        "access_token": "syt_token",
                        **FAST,
                    }
                ]
            }
        )
        await notify_all(settings, action())
    first, retry = rx.requests
    assert first.method == "PUT"
    prefix = "/_matrix/client/v3/rooms/"
    assert first.path.startswith(prefix)
    room, send, event_type, txn = first.path[len(prefix) :].split("/")
    assert unquote(room) == "!room:example.org"
    assert (send, event_type) == ("send", "m.room.message")
    assert retry.path == first.path  # same transaction id: the homeserver deduplicates
    assert first.headers["authorization"] == "Bearer syt_token"
    body = retry.json()
    assert body["msgtype"] == "m.text"
    assert "flag_csam" in body["body"] and "s3://media/aa/bb/cc.jpg" in body["body"]
    assert txn


async def test_slack_and_discord_formats() -> None:
    with http_receiver() as slack, http_receiver(default=204) as discord:
        settings = NotifySettings.model_validate(
            {
                "channels": [
                    {"type": "slack", "url": slack.url + "/services/T/B/X", **FAST},
                    {"type": "discord", "url": discord.url + "/api/webhooks/1/t", **FAST},
                ]
            }
        )
        await notify_all(settings, action(key="@everyone/x.jpg"))
    [s] = slack.requests
    assert set(s.json()) == {"text", "unfurl_links", "unfurl_media"}
    assert "flag_csam → quarantine" in s.json()["text"]
    [d] = discord.requests
    assert "@\u200beveryone/x.jpg" in d.json()["content"]  # shown, but not a mention
    assert d.json()["allowed_mentions"] == {"parse": []}


async def test_email_through_smtp() -> None:
    with smtp_receiver() as rx:
        settings = NotifySettings.model_validate(
            {
                "instance": "lemmy.example",
                "channels": [
                    {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": rx.port,
                        "starttls": False,
                        "sender": "pictguard@lemmy.example",
                        "recipients": ["admin@lemmy.example"],
                        **FAST,
                    }
                ],
            }
        )
        await notify_all(settings, action())
    [message] = rx.messages
    assert rx.envelopes == [("pictguard@lemmy.example", ["admin@lemmy.example"])]
    assert message["Subject"].startswith("[pictguard] CRITICAL: flag_csam")
    assert "s3://media/aa/bb/cc.jpg" in message.get_content()


async def test_min_severity_per_channel() -> None:
    with http_receiver() as critical_only, http_receiver() as everything:
        settings = NotifySettings.model_validate(
            {
                "channels": [
                    {
                        "type": "webhook",
                        "url": critical_only.url,
                        "min_severity": "critical",
                        **FAST,
                    },
                    {"type": "webhook", "url": everything.url, "min_severity": "info", **FAST},
                ]
            }
        )
        await notify_all(
            settings,
            action("a.jpg", Decision.FLAG_CSAM, "1" * 32),
            action("b.jpg", Decision.FLAG_NSFW, "2" * 32),
            action("c.jpg", Decision.ERROR, "3" * 32),
        )
    assert [r.json()["key"] for r in critical_only.requests] == ["a.jpg"]
    assert sorted(r.json()["key"] for r in everything.requests) == ["a.jpg", "b.jpg", "c.jpg"]


async def test_unscannable_content_reaches_the_default_channels() -> None:
    """Content that could not be scanned is a warning (the channels' default minimum); an
    object that vanished before its scan is not worth a message."""
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, **FAST}]}
        )
        errors = {
            "heic.heic": ErrorReason.UNSUPPORTED_TYPE,
            "huge.webm": ErrorReason.TOO_LARGE,
            "cut.mp4": ErrorReason.UNDECODABLE,
            "gone.jpg": ErrorReason.NOT_FOUND,
        }
        await notify_all(
            settings,
            *(
                action(key, Decision.ERROR, f"{i:032x}").model_copy(update={"reason": reason})
                for i, (key, reason) in enumerate(errors.items())
            ),
        )
    received = {r.json()["key"]: r.json() for r in rx.requests}
    assert sorted(received) == ["cut.mp4", "heic.heic", "huge.webm"]
    assert received["huge.webm"]["severity"] == "warning"
    assert received["huge.webm"]["reason"] == "too_large"


async def test_a_flood_becomes_a_digest() -> None:
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {
                "channels": [
                    {
                        "type": "webhook",
                        "url": rx.url,
                        "digest_interval_s": 3600,
                        "retry_initial_s": 0,
                    }
                ]
            }
        )
        floods = [action(f"k{i}.jpg", verdict_id=f"{i:032x}") for i in range(40)]
        await notify_all(settings, *floods)
    payloads = [r.json() for r in rx.requests]
    # At most one message per interval, plus the digest flushed at stop.
    assert len(payloads) <= 2
    assert payloads[-1]["event"] == "digest"
    total = sum(p["count"] if p["event"] == "digest" else 1 for p in payloads)
    assert total == 40
    digest = payloads[-1]
    assert digest["counts"] == {"flag_csam/quarantine/done": digest["count"]}
    assert len(digest["items"]) <= 20


async def test_alerts_skip_the_digest() -> None:
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, "digest_interval_s": 3600}]}
        )
        notifier = Notifier(settings)
        await notifier.start()
        await notifier.notify(action_notice(action(verdict_id="1" * 32), settings))
        await notifier.notify(action_notice(action(verdict_id="2" * 32), settings))
        await notifier.notify(alert_notice("guard_tripped", "guard:x", "tripped", settings))
        await notifier.flush()
        payloads = [r.json() for r in rx.requests]
        await notifier.stop()
    alerts = [p for p in payloads if p["event"] == "guard_tripped"]
    others = [p for p in payloads if p["event"] != "guard_tripped"]
    assert len(alerts) == 1 and alerts[0]["summary"] == "tripped"
    assert sum(p.get("count", 1) for p in others) == 2


async def test_deduplicated_by_verdict_id_across_restarts(state: SqliteState) -> None:
    with http_receiver() as rx:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "webhook", "url": rx.url, **FAST}]}
        )
        table = state.table("enforce_notified")
        await notify_all(settings, action(), action(), sent=table)
        await notify_all(settings, action(), sent=table)
    assert len(rx.requests) == 1
    assert json.loads(rx.requests[0].body)["verdict_id"] == "v" * 32
