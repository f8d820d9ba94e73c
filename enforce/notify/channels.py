"""Delivery to each kind of channel, with retries and back-off.

A delivery error that a retry can fix (connection refused, timeout, 5xx, 429) is retried
up to ``max_attempts`` times with exponential back-off; anything else (a 4xx: wrong token,
wrong room, deleted webhook) fails at once with a message that says what to fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from enforce.notify.message import (
    discord_text,
    matrix_html,
    matrix_plain,
    render_subject,
    render_text,
    slack_text,
)
from enforce.settings import (
    DiscordChannel,
    EmailChannel,
    MatrixChannel,
    SlackChannel,
    WebhookChannel,
    _Channel,
)
from pipeline.errors import PictguardError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pictguard-Signature"
TIMESTAMP_HEADER = "X-Pictguard-Timestamp"
EVENT_ID_HEADER = "X-Pictguard-Event-Id"
# How far a receiver should let a signed delivery's timestamp be from its own clock.
SIGNATURE_TOLERANCE_S = 300
DISCORD_LIMIT = 2000


class DeliveryError(PictguardError, RuntimeError):
    """A notification could not be delivered; the message names the channel and the fix."""


class RetryableDeliveryError(DeliveryError):
    """A delivery failure another attempt may fix."""


class Sender(Protocol):
    """Delivers payloads to one configured channel."""

    @property
    def channel(self) -> _Channel: ...

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        """Deliver one payload (an action, an alert or a digest) once."""

    async def close(self) -> None: ...


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Pictguard-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``.

    ``timestamp`` (Unix seconds) travels in ``X-Pictguard-Timestamp``; signing it with the
    body lets a receiver refuse a captured delivery replayed later (Stripe's scheme).
    """
    signed = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    body: bytes,
    signature: str,
    timestamp: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Check a delivery's signature and freshness in constant time (for Python receivers).

    False when the signature does not match, or when ``timestamp`` lies more than
    ``tolerance_s`` from ``now`` (a replay, or a clock far off). A receiver that also keeps
    the ``X-Pictguard-Event-Id`` values it saw within the tolerance refuses exact replays.
    """
    if not timestamp.isdigit():
        return False
    moment = int(timestamp)
    if abs((time.time() if now is None else now) - moment) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, moment).encode(), signature.encode())


async def deliver(sender: Sender, payload: dict[str, Any], event_id: str) -> None:
    """Send with the channel's retry policy; raises :class:`DeliveryError` at the end."""
    channel = sender.channel
    retrying = AsyncRetrying(
        stop=stop_after_attempt(channel.max_attempts),
        wait=wait_exponential(multiplier=channel.retry_initial_s, max=channel.retry_max_s),
        retry=retry_if_exception_type(RetryableDeliveryError),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await sender.send(payload, event_id)


class _HttpSender:
    """Shared HTTP plumbing: one client per channel, errors sorted into retry or not."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self._client = httpx.AsyncClient(timeout=channel.timeout_s, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise RetryableDeliveryError(
                f"{what}: cannot reach {_host(url)} ({exc.__class__.__name__}) — check the URL "
                "and that the receiver is up"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableDeliveryError(f"{what}: {_host(url)} answered {response.status_code}")
        if response.status_code >= 400:
            raise DeliveryError(
                f"{what}: {_host(url)} refused the message with {response.status_code} — check "
                "the channel's URL and credentials"
            )
        return response


def _host(url: str) -> str:
    # Webhook URLs often embed their secret in the path: log only the host.
    return httpx.URL(url).host or "?"


class WebhookSender(_HttpSender):
    """POST the JSON payload, signed with a timestamp when a secret is set."""

    channel: WebhookChannel

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            **self.channel.headers,
        }
        if self.channel.secret is not None:
            # Each attempt is signed afresh: a retry after a long back-off stays fresh.
            moment = int(time.time())
            headers[TIMESTAMP_HEADER] = str(moment)
            headers[SIGNATURE_HEADER] = sign(
                self.channel.secret.get_secret_value().encode(), body, moment
            )
        await self._request("POST", self.channel.url, "webhook", content=body, headers=headers)


class MatrixSender(_HttpSender):
    """``PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}``.

    The transaction id comes from the event id, so a retried send is not posted twice
    (the homeserver deduplicates by transaction id per access token).
    """

    channel: MatrixChannel

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        c = self.channel
        txn = hashlib.sha256(event_id.encode()).hexdigest()[:32]
        url = (
            f"{c.homeserver.rstrip('/')}/_matrix/client/v3/rooms/{quote(c.room_id, safe='')}"
            f"/send/m.room.message/{txn}"
        )
        text = render_text(payload)
        content = {
            "msgtype": "m.text",
            "body": matrix_plain(text),
            "format": "org.matrix.custom.html",
            "formatted_body": matrix_html(text),
            # Intentional mentions (Matrix 1.7): an empty set turns off the legacy rules
            # that ping a room for "@room" or a person for their name anywhere in the text.
            "m.mentions": {},
        }
        headers = {"Authorization": f"Bearer {c.access_token.get_secret_value()}"}
        await self._request("PUT", url, "matrix", json=content, headers=headers)


class SlackSender(_HttpSender):
    """POST ``{"text": ...}`` to a Slack-compatible incoming webhook."""

    channel: SlackChannel

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        body = {
            "text": slack_text(render_text(payload)),
            # No previews: a URL in an object key must not make Slack fetch it.
            "unfurl_links": False,
            "unfurl_media": False,
        }
        await self._request("POST", self.channel.url, "slack", json=body)


class DiscordSender(_HttpSender):
    """POST ``{"content": ...}`` to a Discord webhook."""

    channel: DiscordChannel

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        text = discord_text(render_text(payload))
        if len(text) > DISCORD_LIMIT:
            text = text[: DISCORD_LIMIT - 1] + "…"
        await self._request(
            "POST",
            self.channel.url,
            "discord",
            # Mentions in object keys must not ping anyone.
            json={"content": text, "allowed_mentions": {"parse": []}},
        )


class EmailSender:
    """stdlib smtplib, run in a thread so the event loop never waits on SMTP."""

    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel

    async def close(self) -> None:
        """Connections are opened per message."""

    async def send(self, payload: dict[str, Any], event_id: str) -> None:
        c = self.channel
        message = EmailMessage()
        # render_subject keeps CR/LF out: a key cannot add a header (Bcc:) to the message.
        message["Subject"] = f"{c.subject_prefix} {render_subject(payload)}".strip()
        message["From"] = c.sender
        message["To"] = ", ".join(c.recipients)
        message["X-Pictguard-Event-Id"] = event_id
        message.set_content(render_text(payload))
        await asyncio.to_thread(self._send_sync, message)

    def _send_sync(self, message: EmailMessage) -> None:
        c = self.channel
        where = f"email: SMTP {c.host}:{c.port}"
        try:
            smtp: smtplib.SMTP
            if c.ssl:
                smtp = smtplib.SMTP_SSL(
                    c.host, c.port, timeout=c.timeout_s, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            with smtp:
                if c.starttls and not c.ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if c.username:
                    password = c.password.get_secret_value() if c.password else ""
                    smtp.login(c.username, password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(f"{where}: login refused — check username and password") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                f"{where}: {exc} — set starttls: false for a server without STARTTLS"
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(
                f"{where}: every recipient was refused — check recipients"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise RetryableDeliveryError(f"{where}: {exc.__class__.__name__}: {exc}") from None


def sender_for(channel: _Channel) -> Sender:
    """The sender of a configured channel."""
    if isinstance(channel, WebhookChannel):
        return WebhookSender(channel)
    if isinstance(channel, MatrixChannel):
        return MatrixSender(channel)
    if isinstance(channel, SlackChannel):
        return SlackSender(channel)
    if isinstance(channel, DiscordChannel):
        return DiscordSender(channel)
    if isinstance(channel, EmailChannel):
        return EmailSender(channel)
    raise TypeError(f"no sender for channel type {type(channel).__name__}")
