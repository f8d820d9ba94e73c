"""Photo-like generated images for the decode/PDQ tests and ``bench/classify.py``.

A private stand-in for ``tests/media.py`` (being written elsewhere), with the same names
and signatures: ``photo_jpeg``, ``screenshot_png``, ``webp_image``, ``near_duplicates``.
Once ``tests/media.py`` is on main, import from there instead and delete this module.

Nothing here is a real photograph: smooth upsampled random colour fields, shapes, text-free
UI blocks and grain — enough texture that an 800×600 JPEG at q85 weighs 40–120 KB, as
phone photos shrunk for the web do.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _field(rng: np.random.Generator, width: int, height: int, cells: int) -> Image.Image:
    """A smooth random colour field: a ``cells``-wide random grid upsampled bicubically."""
    rows = max(2, round(cells * height / max(width, 1)))
    grid = rng.integers(0, 256, (rows, cells, 3), dtype=np.uint8)
    return Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BICUBIC)


def photo(seed: int, width: int = 800, height: int = 600) -> Image.Image:
    """A photo-like RGB image: layered colour fields, soft shapes, sensor-like grain."""
    rng = np.random.default_rng(seed)
    base = np.asarray(_field(rng, width, height, int(rng.integers(3, 7))), dtype=np.float32)
    detail = np.asarray(_field(rng, width, height, int(rng.integers(12, 40))), dtype=np.float32)
    array = 0.75 * base + 0.25 * detail
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    shapes = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(shapes)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        x1 = x0 + int(rng.integers(width // 12, width // 2))
        y1 = y0 + int(rng.integers(height // 12, height // 2))
        fill = (*(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(120, 256)))
        if rng.random() < 0.6:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon(
                [(int(rng.integers(x0, x1 + 1)), int(rng.integers(y0, y1 + 1))) for _ in range(5)],
                fill=fill,
            )
    shapes = shapes.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
    image = Image.alpha_composite(image.convert("RGBA"), shapes).convert("RGB")
    grain = rng.normal(0.0, float(rng.uniform(2.0, 6.0)), (height, width, 1)).astype(np.float32)
    noisy = np.asarray(image, dtype=np.float32) + grain
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def photo_jpeg(seed: int, width: int = 800, height: int = 600, quality: int = 85) -> bytes:
    """A photo-like JPEG (``photo`` encoded at ``quality``)."""
    return _encode(photo(seed, width, height), "JPEG", quality=quality)


def screenshot(seed: int, width: int = 800, height: int = 600) -> Image.Image:
    """A screenshot-like image: flat panels, bars, hard edges, a photo thumbnail."""
    rng = np.random.default_rng(seed)
    background = tuple(int(c) for c in rng.integers(200, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    bar = tuple(int(c) for c in rng.integers(0, 120, 3))
    draw.rectangle((0, 0, width, max(8, height // 12)), fill=bar)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(height // 12, height - 8))
        x1 = min(width, x0 + int(rng.integers(width // 10, width // 2)))
        y1 = min(height, y0 + int(rng.integers(6, max(7, height // 5))))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    # Rows of "text": short dark dashes.
    for row in range(int(rng.integers(4, 14))):
        y = int(height // 8 + row * max(10, height // 20))
        x = int(rng.integers(4, max(5, width // 6)))
        while x < width * 0.9 and y < height - 4:
            length = int(rng.integers(3, 30))
            draw.rectangle((x, y, x + length, y + 3), fill=(30, 30, 30))
            x += length + int(rng.integers(3, 8))
    thumb_w, thumb_h = max(8, width // 3), max(8, height // 3)
    thumb = photo(seed + 10_000, thumb_w, thumb_h)
    image.paste(thumb, (int(rng.integers(0, width - thumb_w + 1)), height - thumb_h))
    return image


def screenshot_png(seed: int, width: int = 800, height: int = 600) -> bytes:
    """A screenshot-like PNG."""
    return _encode(screenshot(seed, width, height), "PNG")


def webp_image(seed: int, width: int = 800, height: int = 600, quality: int = 80) -> bytes:
    """A photo-like lossy WebP."""
    return _encode(photo(seed, width, height), "WEBP", quality=quality)


def near_duplicates(data: bytes, seed: int) -> dict[str, bytes]:
    """Copies of an image as they circulate: resized, re-encoded, slightly cropped.

    Every copy is a JPEG decoded from ``data`` and changed once; PDQ should keep each
    within distance 31 of the original.
    """
    rng = np.random.default_rng(seed)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    scale = float(rng.uniform(0.4, 0.8))
    small = image.resize((max(16, round(width * scale)), max(16, round(height * scale))))
    dx, dy = round(width * rng.uniform(0.01, 0.05)), round(height * rng.uniform(0.01, 0.05))
    cropped = image.crop((dx, dy, width - dx, height - dy))
    big = image.resize((round(width * 1.5), round(height * 1.5)), Image.Resampling.BICUBIC)
    return {
        "resized": _encode(small, "JPEG", quality=85),
        "reencoded": _encode(image, "JPEG", quality=int(rng.integers(40, 70))),
        "cropped": _encode(cropped, "JPEG", quality=85),
        "upscaled": _encode(big, "JPEG", quality=80),
        "webp": _encode(image, "WEBP", quality=70),
    }
