"""``--since`` values, read the same way by every command that takes one."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pipeline.errors import PictguardError

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SinceError(PictguardError, ValueError):
    """A ``--since`` value that is neither an age nor a date."""


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """An age (``30m``, ``12h``, ``7d``, ``1w``) before ``now``, or an ISO date or time (UTC
    unless it says otherwise)."""
    match = _AGE.match(text.lower())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SinceError(
            f"--since {text!r}: use an age such as 30m, 2h, 7d, or an ISO date or time "
            "(2024-05-01, 2024-05-01T12:00+02:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
