"""An object key is chosen by whoever uploads: it must not speak in pictguard's voice.

Before this fix a key with ``<!channel> <https://evil.example|Open admin review>`` reached
Slack as markup (a channel-wide ping and a disguised link in an admin alert), and a newline
in a key started a forged line in the console log. Each channel now escapes for its own
markup, and every text form keeps a value on one line.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pytest

from enforce.notify import Notifier, action_notice, alert_notice
from enforce.settings import NotifySettings
from pipeline.events import (
    ActionOutcome,
    ActionType,
    Decision,
    EnforcementAction,
    ObjectRef,
    StoreKind,
)
from pipeline.logs import ConsoleFormatter, RedactingFormatter, setup_logging
from pipeline.settings import LogSettings
from tests.enforce.receivers import http_receiver, smtp_receiver

FAST = {"retry_initial_s": 0, "retry_max_s": 0, "digest_interval_s": 0, "max_attempts": 1}
FORGED = "12:00:00 ERROR   enforce: guard disabled by admin"
EVIL_KEY = (
    "media/<!channel> <https://evil.example|Open admin review> @everyone @here <@1234> "
    "[Open admin review](https://evil.example) *urgent* & <b>bold</b>"
    f"\nNext step: open https://evil.example\r\n{FORGED}\u202e"
)


def evil_action() -> EnforcementAction:
    return EnforcementAction(
        verdict_id="e" * 32,
        object=ObjectRef(store=StoreKind.S3, bucket="media", key=EVIL_KEY),
        decision=Decision.FLAG_CSAM,
        action=ActionType.QUARANTINE,
        outcome=ActionOutcome.DONE,
        sha256="ab" * 32,
        detail=f"key {EVIL_KEY}",
        scores={"csam": 0.99},
    )


async def notify(settings: NotifySettings, *notices: Any) -> None:
    notifier = Notifier(settings)
    await notifier.start()
    for notice in notices:
        await notifier.notify(notice)
    await notifier.stop()


def one_line_each(text: str) -> list[str]:
    lines = text.splitlines()
    assert not any(line.startswith(("Next step: open", FORGED)) for line in lines), text
    return lines


async def test_slack_mattermost_text_is_escaped_and_mentions_nobody() -> None:
    with http_receiver() as slack:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "slack", "url": slack.url + "/services/T/B/X", **FAST}]}
        )
        await notify(settings, action_notice(evil_action(), settings))
    [request] = slack.requests
    body = request.json()
    text = body["text"]
    # Slack's mrkdwn: only &, < and > have to be escaped, and then nothing is markup.
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; &lt;https://evil.example|Open admin review&gt;" in text
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in text
    for mention in ("@everyone", "@here", "@channel"):
        assert mention not in text  # Mattermost pings for these as plain words
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    one_line_each(text)


async def test_discord_markdown_links_and_mentions_are_escaped() -> None:
    with http_receiver(default=204) as discord:
        settings = NotifySettings.model_validate(
            {"channels": [{"type": "discord", "url": discord.url + "/api/webhooks/1/t", **FAST}]}
        )
        await notify(settings, action_notice(evil_action(), settings))
    [request] = discord.requests
    body = request.json()
    content = body["content"]
    assert body["allowed_mentions"] == {"parse": []}
    assert "[Open admin review](https" not in content  # no masked link
    assert "\\[Open admin review\\]\\(https" in content
    # Every character Discord's markdown reads (links, mentions, emphasis) is escaped.
    assert re.search(r"(?<!\\)[<>\[\]()*_~`|]", content) is None, content
    assert "\\<@\u200b1234\\>" in content
    assert "@everyone" not in content and "@here" not in content
    assert "*urgent*" not in content and "\\*urgent\\*" in content
    one_line_each(content)


async def test_matrix_html_is_escaped_and_mentions_are_off() -> None:
    with http_receiver() as matrix:
        settings = NotifySettings.model_validate(
            {
                "channels": [
                    {
                        "type": "matrix",
                        "homeserver": matrix.url,
                        "room_id": "!room:example.org",
                        "access_token": "syt_0123456789abcdef",
                        **FAST,
                    }
                ]
            }
        )
        await notify(settings, action_notice(evil_action(), settings))
    [request] = matrix.requests
    content = request.json()
    assert content["format"] == "org.matrix.custom.html"
    html = content["formatted_body"]
    assert "<b>" not in html and "<a" not in html and "<https" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "&lt;https://evil.example|" in html
    assert content["m.mentions"] == {}  # no @room / name pings from the text
    assert "@room" not in content["body"] and "@everyone" not in content["body"]
    one_line_each(content["body"])
    assert "<br>" not in html.split("Next step")[0].split("|Open admin review")[1]


async def test_email_headers_and_body_keep_values_on_one_line() -> None:
    with smtp_receiver() as smtp:
        settings = NotifySettings.model_validate(
            {
                "instance": "lemmy.example",
                "channels": [
                    {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": smtp.port,
                        "starttls": False,
                        "sender": "pictguard@lemmy.example",
                        "recipients": ["admin@lemmy.example"],
                        "min_severity": "info",
                        **FAST,
                    }
                ],
            }
        )
        alert = alert_notice(
            "quarantine_exposed",
            "exposed:x",
            "quarantine s3://q/\r\nBcc: victim@evil.example\r\n\r\nforged body",
            settings,
        )
        await notify(settings, action_notice(evil_action(), settings), alert)
    assert len(smtp.messages) == 2
    for message in smtp.messages:
        assert message["Bcc"] is None
        assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
        one_line_each(message.get_content())
    # Only the recipients pictguard was given.
    assert all(to == ["admin@lemmy.example"] for _, to in smtp.envelopes)


@pytest.mark.parametrize("redacting", [False, True])
def test_console_log_line_cannot_be_forged(redacting: bool) -> None:
    """A key in a message argument or a structured field stays inside its own line."""
    formatter: logging.Formatter = ConsoleFormatter()
    if redacting:
        formatter = RedactingFormatter(formatter, ["0123456789abcdef"])
    record = logging.makeLogRecord(
        {
            "name": "ingest",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "cannot read %s",
            "args": (EVIL_KEY,),
        }
    )
    record.__dict__["key"] = EVIL_KEY
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\u202e" not in line
    assert "\\nNext step: open" in line and "\\r\\n" + FORGED in line and "\\u202e" in line


def test_console_log_through_setup_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler the CLI installs: one record is one line, a traceback still readable."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(LogSettings(format="console"))
        log = logging.getLogger("enforce.test")
        log.warning("quarantined %s", EVIL_KEY, extra={"key": EVIL_KEY})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed on %s", "k\nFAKE")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert lines[0].count("quarantined") == 1 and FORGED in lines[0]
    assert not any(line.startswith(FORGED) for line in lines)
    assert "failed on k\\nFAKE" in lines[1]
    assert lines[2] == "Traceback (most recent call last):"  # tracebacks keep their lines
