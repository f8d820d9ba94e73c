"""Structured logging: console lines for people, JSON lines for log pipelines.

Never log image bytes or secrets: events are logged by id, key and decision only.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

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


def setup_logging(settings: LogSettings, *, debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if debug else settings.level)
    # Library chatter: pictguard reports connection problems itself, in words that say
    # which setting to check, so the libraries' own lines would only repeat them.
    for noisy in ("aiokafka", "botocore", "aiobotocore", "werkzeug", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.CRITICAL)
