"""Media for the remote-worker tests: realistic photos, and harmless photos washed in a
colour that the deterministic colour model (tests/colour_model.py) flags."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.media import photo_image

MAGENTA = (255, 0, 255)  # red and blue: the colour model's "flag_csam"
RED = (255, 0, 0)  # red only: "flag_nsfw"


def clean(seed: int, width: int = 640, height: int = 480) -> bytes:
    """An ordinary photo-like JPEG that the colour model allows (a bright sky can be blue
    or red enough to be flagged: such seeds are passed over for the next)."""
    for attempt in range(seed, seed + 100_000, 1000):
        photo = photo_image(attempt, width, height)
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        centre = photo.crop((left, top, left + side, top + side)).resize((16, 16))
        r, g, b = np.asarray(centre, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        if max(r, b) < 170 and not (g > 180 and r < 70):
            out = io.BytesIO()
            photo.save(out, "JPEG", quality=85)
            return out.getvalue()
    raise AssertionError(f"no photo near seed {seed} passes the colour model")


def washed(seed: int, colour: tuple[int, int, int], width: int = 640, height: int = 480) -> bytes:
    """A photo under a 90 % wash of ``colour``: harmless, and flagged by the colour model."""
    photo = photo_image(seed, width, height)
    out = io.BytesIO()
    Image.blend(photo, Image.new("RGB", photo.size, colour), 0.9).save(out, "JPEG", quality=85)
    return out.getvalue()
