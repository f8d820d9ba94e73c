"""Structured logging: console lines for people, JSON lines for log pipelines.

Never log image bytes or secrets: events are logged by id, key and decision only. As a
second line of defence every configured secret is redacted from every formatted line,
tracebacks and the libraries' debug output (``--debug``) included (:mod:`pipeline.redact`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from pipeline import redact
from pipeline.redact import REDACTED, Redactor
from pipeline.settings import LogSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

# Characters that would break a line or hide text when printed: C0/C1 controls (CR, LF,
# ESC…), the Unicode line and paragraph separators, zero-width and bidirectional marks.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line: control and invisible characters as visible escapes (``\\n``).

    An object key is chosen by whoever uploads: a newline in it must not start a forged log
    line (or a forged line in a notification), nor a bidi override reverse what follows.
    """
    return _UNPRINTABLE.sub(_escaped, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class ConsoleFormatter(logging.Formatter):
    """``time level logger: message key=value …`` — the structured fields stay visible.

    The message and the fields are one line, whatever they contain (control characters are
    escaped); only a traceback, which pictguard writes itself, spans several lines.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_") and v is not None
        ]
        return printable(f"{line} {' '.join(extras)}" if extras else line)


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then redacts each secret (as is, URL-quoted, JSON-escaped),
    those registered for the process (:mod:`pipeline.redact`) and credential-like URL
    parameters."""

    REDACTED = REDACTED

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact.configured(self.redact(self.inner.format(record)))


def setup_logging(
    settings: LogSettings, *, debug: bool = False, secrets: Iterable[str] = ()
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter() if settings.format == "json" else ConsoleFormatter()
    )
    handler.setFormatter(RedactingFormatter(formatter, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if debug else settings.level)
    # Library chatter: pictguard reports connection problems itself, in words that say
    # which setting to check, so the libraries' own lines would only repeat them.
    for noisy in ("aiokafka", "botocore", "aiobotocore", "werkzeug", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.CRITICAL)
    # faiss says at INFO which CPU build it loaded, once per process, on first import.
    logging.getLogger("faiss").setLevel(logging.DEBUG if debug else logging.WARNING)
