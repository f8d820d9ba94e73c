"""Structured logging: console lines for people, JSON lines for log pipelines.

Never log image bytes or secrets: events are logged by id, key and decision only. As a
second line of defence every configured secret is redacted from every formatted line,
tracebacks and the libraries' debug output (``--debug``) included.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

from pipeline.settings import LogSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


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
    """``time level logger: message key=value …`` — the structured fields stay visible."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_") and v is not None
        ]
        return f"{line} {' '.join(extras)}" if extras else line


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then replaces each secret (as is, URL-quoted, JSON-escaped)."""

    REDACTED = "[redacted]"

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        variants = {
            v for s in secrets if len(s) >= 4 for v in (s, quote(s, safe=""), json.dumps(s)[1:-1])
        }
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(variants, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, self.REDACTED)
        return line


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
