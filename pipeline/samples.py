"""Harmless generated sample files for the demo, the tests and the benchmarks.

Nothing objectionable is ever generated or shipped: images are random noise under random
shapes; "flagged" samples are such images whose sha256 is put on the blocklist.
"""

from __future__ import annotations

import io
import random
import zipfile

from PIL import Image, ImageDraw


def image_bytes(seed: int, fmt: str = "PNG", size: int = 64) -> bytes:
    """A small, unique image: random noise under random rectangles and ellipses."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
        box = (x0, y0, x0 + rng.randrange(4, size // 2), y0 + rng.randrange(4, size // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def corrupt_bytes(seed: int) -> bytes:
    """A JPEG cut off after its header: the type is detectable, the pixels are not."""
    return image_bytes(seed, "JPEG", 96)[:200]


def non_image_bytes(seed: int) -> tuple[bytes, str]:
    """A PDF, a zip or a text file, with the extension it would have."""
    kind = seed % 3
    if kind == 0:
        return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", ".pdf"
    if kind == 1:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("backup.sql", f"-- dump {seed}\n")
        return out.getvalue(), ".zip"
    return f"not an image {seed}\n".encode(), ".txt"
