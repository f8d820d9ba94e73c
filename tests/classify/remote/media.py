"""Media for the remote-worker tests: realistic photos, and harmless photos washed in a
colour that the deterministic colour model (tests/colour_model.py) flags."""

from __future__ import annotations

import io

from PIL import Image

from tests.media import photo_image, photo_jpeg

MAGENTA = (255, 0, 255)  # red and blue: the colour model's "flag_csam"
RED = (255, 0, 0)  # red only: "flag_nsfw"


def clean(seed: int, width: int = 640, height: int = 480) -> bytes:
    """An ordinary photo-like JPEG (the colour model allows it)."""
    return photo_jpeg(seed, width, height)


def washed(seed: int, colour: tuple[int, int, int], width: int = 640, height: int = 480) -> bytes:
    """A photo under a 90 % wash of ``colour``: harmless, and flagged by the colour model."""
    photo = photo_image(seed, width, height)
    out = io.BytesIO()
    Image.blend(photo, Image.new("RGB", photo.size, colour), 0.9).save(out, "JPEG", quality=85)
    return out.getvalue()
