"""``--since``: one reading for every command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.timeparse import SinceError, parse_since


def test_parse_since() -> None:
    now = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now=now) == datetime(2024, 5, 8, 10, 30, tzinfo=UTC)
    assert parse_since("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T12:00+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(SinceError, match="ISO date"):
        parse_since("last tuesday")
