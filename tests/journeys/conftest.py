"""Fixtures of the admin journeys: the generated media, made once per session."""

from __future__ import annotations

import pytest

from tests.journeys.helpers import media
from tests.media import MediaItem


@pytest.fixture(scope="session")
def journey_media() -> list[MediaItem]:
    """The journey set (8 images from 320 to 4,000 px, a corrupt JPEG, a PDF, a text file)."""
    return media(0)
