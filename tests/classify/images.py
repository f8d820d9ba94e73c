"""Generated test images: gradients, shapes and noise only — never real photographs."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A gradient with random coloured shapes: structured enough for a stable PDQ hash."""
    rng = random.Random(seed)
    width, height = size
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    base = np.array([rng.random() for _ in range(3)], dtype=np.float32)
    tilt = np.array([rng.random() for _ in range(3)], dtype=np.float32)
    array = (base * (1 - x) + tilt * y) * 200
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(20, width // 2), y0 + rng.randrange(20, height // 2)
        color = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def jpeg(seed: int = 0, size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    return encode(scene(seed, size), "JPEG", quality=quality)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR claiming ``width×height``, with no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    return encode(scene(3).convert("CMYK"), "JPEG")


def png16() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (128, 1))
    return encode(Image.fromarray(ramp), "PNG")  # uint16 → mode I;16


def palette_with_alpha() -> bytes:
    image = scene(4, (200, 150)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(image, "PNG", transparency=0)


def la_png() -> bytes:
    gray = scene(5, (120, 90)).convert("L")
    alpha = Image.linear_gradient("L").resize(gray.size)
    image = Image.merge("LA", (gray, alpha))
    return encode(image, "PNG")


def exif_rotated(orientation: int = 6) -> bytes:
    """A 400×200 JPEG whose EXIF says it must be displayed rotated (200×400 upright)."""
    image = scene(6, (400, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes())


def gif_frames(n: int, size: tuple[int, int] = (48, 48)) -> bytes:
    frames = [
        Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)) for i in range(n)
    ]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)
    return out.getvalue()


def animated_webp(n: int = 6) -> bytes:
    frames = [scene(10 + i, (96, 64)) for i in range(n)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=40)
    return out.getvalue()


def apng(n: int = 5) -> bytes:
    frames = [scene(20 + i, (80, 60)) for i in range(n)]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:], duration=40)
    return out.getvalue()


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="red"/></svg>'
)
MP4_HEADER = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x08free"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "not an image")
    return out.getvalue()


def random_bytes(n: int = 4096, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)
