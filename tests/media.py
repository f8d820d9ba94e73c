"""Realistic generated media for tests and benchmarks — never real or objectionable images.

Everything here is synthesised from a seed, in memory, and deterministic: the same call with
the same arguments returns the same bytes (with the same library versions). Nothing is
cached on disk; :func:`write_set` writes files only when asked.

What the generators make
------------------------
* **Photos** (:func:`photo_image`, :func:`photo_jpeg`, :func:`png_photo`, :func:`webp_image`,
  :func:`jxl_image`, :func:`avif_image`, :func:`heic_image`): a sky/ground colour field from
  upsampled random fields, a few soft shaded shapes, a mild blur and fine luminance grain.
  The grain is what makes the JPEG sizes photo-like: at quality 85 an 800×600 JPEG is
  about 60–95 KB and a 4,000×3,000 one about 1.5–2.3 MB at the default detail (roughly
  1.0–1.6 bits per pixel); ``detail=1.0`` at q95 takes a 4,000×3,000 JPEG to about 4.5 MB.
* **Screenshots** (:func:`screenshot_image`, :func:`screenshot_png`): flat UI panels, lines of
  text in Pillow's default (FreeType) font at a readable size, icons, avatars, buttons and
  the odd photo thumbnail, in a light or dark theme; phone layout when portrait.
* **Animations** (:func:`animated_gif`, :func:`animated_png`, :func:`animated_webp`): a camera
  pan over a photo with a moving ball; ``special_frame=(index, image)`` puts a distinct image
  in one frame so a test can check "flag the file if any frame flags".
* **Video** (:func:`video`): real encoded MP4/MOV/MKV/WebM through PyAV's bundled FFmpeg,
  keyframes exactly every ``keyframe_interval`` frames, optional AAC/Opus audio and a
  special frame as above. Defaults per container are in :data:`VIDEO_DEFAULT_CODECS`.
* **Bad input**: :func:`truncated`, :func:`corrupt_jpeg`, :func:`non_image`,
  :func:`mislabelled`, :func:`declared_huge_image` and the hostile videos
  (:func:`truncated_video`, :func:`huge_frame_video`, :func:`many_frames_video`,
  :func:`long_duration_video`, all gathered by :func:`hostile_videos`).
* **Near-duplicates** for PDQ recall: :func:`near_duplicates`.
* **Sets**: :func:`upload_mix` (what an instance receives), :func:`journey_set` (a small folder
  for admin journey tests) and :func:`write_set`.

Generation times on the 2-core development machine (idle / shared with other jobs):
800×600 photo JPEG 0.03–0.1 s, 4,000×3,000 0.4 / 0.65 s, a 5-s 640×360 MP4 0.4 / 0.85 s,
:func:`journey_set` 1.4 / 2.3 s, ``upload_mix(64)`` 9 / 17 s.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import pdqhash
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = [
    "CONTENT_TYPES",
    "NON_IMAGE_KINDS",
    "VIDEO_CONTAINERS",
    "VIDEO_DEFAULT_CODECS",
    "MediaItem",
    "animated_gif",
    "animated_png",
    "animated_webp",
    "animation_frames",
    "avif_image",
    "corrupt_jpeg",
    "cropped",
    "declared_huge_image",
    "extension_for",
    "heic_image",
    "hostile_videos",
    "huge_frame_video",
    "journey_set",
    "jxl_image",
    "long_duration_video",
    "many_frames_video",
    "mislabelled",
    "near_duplicates",
    "non_image",
    "pdq_distance",
    "pdq_hash",
    "photo_image",
    "photo_jpeg",
    "png_photo",
    "screenshot_image",
    "screenshot_png",
    "truncated",
    "truncated_video",
    "upload_mix",
    "video",
    "video_encoders",
    "webp_image",
    "write_set",
]

ImageSource = bytes | Image.Image
"""An image given to a generator: encoded bytes (any format Pillow opens) or a Pillow image."""

SpecialFrame = tuple[int, ImageSource]
"""``(frame index, image)``: that frame of an animation or video shows this image instead."""

VideoContainer = Literal["mp4", "webm", "mov", "mkv"]
VIDEO_CONTAINERS: tuple[VideoContainer, ...] = ("mp4", "webm", "mov", "mkv")

VIDEO_DEFAULT_CODECS: dict[str, str] = {
    # H.264 in MP4 is what phones and browsers upload most; veryfast preset, CRF 23.
    "mp4": "libx264",
    # VP9 is the WebM codec browsers record with (MediaRecorder); realtime deadline.
    "webm": "libvpx-vp9",
    # iPhones record HEVC in QuickTime; tagged hvc1 as Apple writes it.
    "mov": "libx265",
    # Screen recorders (OBS) write H.264 in Matroska.
    "mkv": "libx264",
}
"""The encoder :func:`video` uses per container when ``codec`` is None."""

_FORMAT_NAMES = {"mp4": "mp4", "webm": "webm", "mov": "mov", "mkv": "matroska"}

CONTENT_TYPES: dict[str, str] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "apng": "image/apng",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "heic": "image/heic",
    "jxl": "image/jxl",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "txt": "text/plain",
    "sql": "application/sql",
    "html": "text/html",
    "svg": "image/svg+xml",
}
"""File extension → MIME type, for the formats this module writes."""

_EXTENSIONS = {mime: ext for ext, mime in CONTENT_TYPES.items()}
_EXTENSIONS["image/apng"] = "png"

NonImageKind = Literal["pdf", "zip", "txt", "sql", "html", "svg"]
NON_IMAGE_KINDS: tuple[NonImageKind, ...] = ("pdf", "zip", "txt", "sql", "html", "svg")

MediaKind = Literal[
    "photo", "screenshot", "animation", "video", "corrupt", "non_image", "mislabelled", "hostile"
]

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum community post reply share "
    "upvote comment thread instance federation moderator settings profile"
)
_WORDS = tuple(_LOREM.split())

# Sky-over-ground colour pairs of ordinary scenes, so photos are not psychedelic noise.
_SCENES = (
    ((150, 190, 235), (70, 110, 50)),  # blue sky over grass
    ((200, 210, 225), (120, 110, 95)),  # overcast over rock
    ((240, 190, 140), (60, 50, 70)),  # sunset over shadow
    ((170, 200, 230), (200, 180, 140)),  # sky over beach
    ((225, 215, 200), (140, 100, 70)),  # indoor wall over wooden floor
    ((90, 110, 140), (40, 50, 40)),  # dusk over forest
    ((235, 235, 235), (170, 170, 180)),  # snow
    ((200, 180, 160), (90, 70, 60)),  # warm room
)


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One generated file as an uploader would send it.

    ``content_type`` is what the uploader declares; ``real_type`` is what the bytes are
    (None when they are no known format). They differ for mislabelled items.
    """

    name: str
    data: bytes
    content_type: str
    kind: MediaKind
    real_type: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    note: str = ""

    @property
    def size(self) -> int:
        """Length of the file in bytes."""
        return len(self.data)


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, salt: str = "") -> np.random.Generator:
    """A numpy generator for ``seed``, decorrelated per purpose by ``salt``."""
    digest = hashlib.sha256(f"{salt}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _as_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    with Image.open(io.BytesIO(source)) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}×{height}")


def extension_for(content_type: str) -> str:
    """The usual file extension (no dot) for a MIME type this module writes."""
    try:
        return _EXTENSIONS[content_type]
    except KeyError:
        raise ValueError(f"no extension known for {content_type!r}") from None


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow ≥ 10.1 ships a scalable default font when FreeType is available.
    return ImageFont.load_default(size=size)


# --------------------------------------------------------------------------- photos


def _field(rng: np.random.Generator, cells: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A smooth random field: a grid of normal values upsampled bicubically to ``size``."""
    grid = rng.standard_normal((cells[1], cells[0]), dtype=np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize(size, Image.Resampling.BICUBIC))


def photo_image(seed: int, width: int, height: int, *, detail: float | None = None) -> Image.Image:
    """A photo-like RGB image: what :func:`photo_jpeg` and the other photo encoders encode.

    ``detail`` (0–1) sets the grain strength and so the compressed size; None picks one
    from the seed between 0.05 and 0.85. The scene is painted on a canvas of at most 640 px
    and upsampled, so a 4,000×3,000 image costs little more than the full-size grain.
    """
    _check_size(width, height)
    rng = _rng(seed, "photo")
    if detail is None:
        detail = float(rng.uniform(0.05, 0.85))
    scale = min(1.0, 640 / max(width, height))
    ww, wh = max(16, round(width * scale)), max(16, round(height * scale))
    aspect = ww / wh

    def cells(n: int) -> tuple[int, int]:
        return max(2, round(n * min(aspect, 1.0) if aspect >= 1 else n)), max(
            2, round(n / max(aspect, 1.0))
        )

    y = np.linspace(0, 1, wh, dtype=np.float32)[:, None]
    horizon = rng.uniform(0.3, 0.7)
    mix = np.clip(
        (y - horizon) * rng.uniform(3, 8) + 0.5 + 0.25 * _field(rng, cells(4), (ww, wh)), 0, 1
    )[..., None]
    top_rgb, bottom_rgb = _SCENES[int(rng.integers(len(_SCENES)))]
    top = np.asarray(top_rgb, np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    bottom = np.asarray(bottom_rgb, np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    light = (
        1.0
        + 0.12 * _field(rng, cells(3), (ww, wh))
        + 0.07 * _field(rng, cells(9), (ww, wh))
        + 0.04 * _field(rng, cells(27), (ww, wh))
    )
    rgb = (top * (1 - mix) + bottom * mix) * light[..., None]
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")

    # Soft, shaded objects in muted colours: edges for PDQ and JPEG to work on.
    shade = np.clip(1.15 - 0.35 * y, 0.6, 1.2)
    for _ in range(int(rng.integers(3, 8))):
        mask = Image.new("L", (ww, wh), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, ww), rng.uniform(0.15 * wh, wh)
        rx, ry = rng.uniform(0.04, 0.25) * ww, rng.uniform(0.04, 0.3) * wh
        box = (float(cx - rx), float(cy - ry), float(cx + rx), float(cy + ry))
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse(box, fill=255)
        elif shape == 1:
            draw.rounded_rectangle(box, radius=float(min(rx, ry) * 0.3), fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon(
                [(float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))) for a in angles],
                fill=255,
            )
        mask = mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 2.0))))
        colour = rng.integers(30, 230, 3).astype(np.float32)
        colour = 0.65 * colour + 0.35 * (top if rng.random() < 0.5 else bottom)
        body = colour * (shade * (1 + 0.08 * _field(rng, (3, 3), (ww, wh))))[..., None]
        layer = Image.fromarray(np.clip(body, 0, 255).astype(np.uint8), "RGB")
        img = Image.composite(layer, img, mask)

    img = img.filter(ImageFilter.GaussianBlur(0.7))
    if (ww, wh) != (width, height):
        # Bilinear: the canvas is blurred already, and it is twice as fast as bicubic here.
        img = img.resize((width, height), Image.Resampling.BILINEAR)

    # Sensor-like luminance grain: a half-resolution layer upsampled (soft, correlated) plus
    # a fine full-resolution one. Grain is what makes photo JPEGs as big as they are.
    sigma = 5.0 + 10.0 * detail
    half = rng.standard_normal(((height + 1) // 2, (width + 1) // 2), dtype=np.float32)
    half = np.clip(half * np.float32(sigma) + np.float32(128), 0, 255)
    grain = Image.fromarray(half.astype(np.uint8), "L").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    fine = rng.integers(125, 132, (height, width), dtype=np.uint8)
    grain = ImageChops.add(grain, Image.fromarray(fine, "L"), 1.0, -128)
    return ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def photo_jpeg(
    seed: int,
    width: int,
    height: int,
    quality: int = 85,
    *,
    orientation: int | None = None,
    detail: float | None = None,
    progressive: bool = False,
) -> bytes:
    """A photo-like JPEG of ``width``×``height`` stored pixels.

    ``orientation`` (1–8) writes an EXIF Orientation tag as cameras do; the pixels stay as
    stored, so with 5–8 a viewer that honours the tag shows a ``height``×``width`` image.
    Sizes at q85: 800×600 ≈ 60–95 KB, 4,000×3,000 ≈ 1.5–2.3 MB (``detail`` moves them).
    """
    params: dict[str, Any] = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        if not 1 <= orientation <= 8:
            raise ValueError(f"EXIF orientation must be 1–8, got {orientation}")
        exif = Image.Exif()
        exif[0x0112] = orientation  # Orientation
        exif[0x010F] = "pictguard-test"  # Make
        exif[0x0110] = "synthetic camera"  # Model
        params["exif"] = exif.tobytes()
    return _encode(photo_image(seed, width, height, detail=detail), "JPEG", **params)


def png_photo(seed: int, width: int, height: int, *, detail: float | None = None) -> bytes:
    """A photo-like PNG (large: roughly 1.5–2.5 bytes per pixel, as real photo PNGs are)."""
    return _encode(photo_image(seed, width, height, detail=detail), "PNG")


def webp_image(
    seed: int,
    width: int,
    height: int,
    lossless: bool = False,
    *,
    quality: int = 80,
    content: Literal["photo", "screenshot"] = "photo",
) -> bytes:
    """A WebP of a photo (default) or a screenshot, lossy or lossless.

    Lossless photos are big and slow to encode (encoder method 0 is used for them).
    """
    if content == "photo":
        image = photo_image(seed, width, height)
    else:
        image = screenshot_image(seed, width, height)
    if lossless:
        return _encode(image, "WEBP", lossless=True, method=0 if content == "photo" else 4)
    return _encode(image, "WEBP", quality=quality, method=4)


def jxl_image(seed: int, width: int, height: int, *, quality: int = 80) -> bytes:
    """A photo-like JPEG XL file (pillow-jxl-plugin; encoder effort 3 for speed)."""
    import pillow_jxl  # noqa: F401  (registers the JXL plugin with Pillow)

    return _encode(photo_image(seed, width, height), "JXL", quality=quality, effort=3)


def avif_image(seed: int, width: int, height: int, *, quality: int = 70) -> bytes:
    """A photo-like AVIF file (Pillow's own AVIF support; encoder speed 10 for speed)."""
    return _encode(photo_image(seed, width, height), "AVIF", quality=quality, speed=10)


def heic_image(seed: int, width: int, height: int, *, quality: int = 50) -> bytes:
    """A photo-like HEIC file as iPhones write (pillow-heif, x265 ultrafast preset)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _encode(
        photo_image(seed, width, height),
        "HEIF",
        quality=quality,
        enc_params={"preset": "ultrafast"},
    )


# --------------------------------------------------------------------------- screenshots


def _wrap(words: Sequence[str], font: Any, width: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


# background, panel, text, muted text, rule lines
_LIGHT_THEME = ((242, 243, 246), (255, 255, 255), (28, 30, 36), (110, 116, 128), (220, 223, 230))
_DARK_THEME = ((24, 26, 31), (36, 39, 46), (225, 228, 235), (140, 146, 160), (55, 60, 70))


def screenshot_image(seed: int, width: int, height: int) -> Image.Image:
    """A UI-like screenshot: header, sidebar (landscape) or status/nav bars (portrait),
    cards with avatars, text paragraphs, buttons and the odd photo thumbnail."""
    _check_size(width, height)
    rng = random.Random(f"screenshot:{seed}")
    dark = rng.random() < 0.35
    accent = rng.choice([(45, 110, 220), (200, 60, 90), (40, 160, 110), (150, 80, 200)])
    bg, panel, text, muted, line = _DARK_THEME if dark else _LIGHT_THEME
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    portrait = height > width
    unit = max(
        11, round((width if portrait else min(width, height * 1.6)) / (30 if portrait else 100))
    )
    body, small, title = _font(unit), _font(max(9, round(unit * 0.8))), _font(round(unit * 1.3))

    def words(n: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(n))

    top = 0
    if portrait:  # phone status bar
        bar = round(unit * 1.8)
        draw.rectangle((0, 0, width, bar), fill=panel)
        draw.text(
            (unit, bar // 2),
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}",
            fill=text,
            font=small,
            anchor="lm",
        )
        for i in range(3):
            x = width - unit * (2 + 1.6 * i)
            draw.rectangle((x, bar * 0.3, x + unit, bar * 0.7), fill=muted)
        top = bar
    header = round(unit * 3)
    draw.rectangle((0, top, width, top + header), fill=accent if rng.random() < 0.5 else panel)
    draw.text(
        (unit, top + header // 2),
        words(2).title(),
        fill=text if not dark else (255, 255, 255),
        font=title,
        anchor="lm",
    )
    if not portrait:
        sx = width * 0.35
        draw.rounded_rectangle(
            (sx, top + header * 0.22, sx + width * 0.3, top + header * 0.78),
            radius=unit,
            fill=bg,
            outline=line,
        )
        draw.text((sx + unit, top + header // 2), "Search", fill=muted, font=body, anchor="lm")
    draw.ellipse(
        (width - unit * 2.8, top + header * 0.2, width - unit * 0.8, top + header * 0.8),
        fill=accent,
    )
    top += header
    bottom = height
    if portrait:  # bottom navigation with icons
        nav = round(unit * 3.2)
        bottom = height - nav
        draw.rectangle((0, bottom, width, height), fill=panel)
        draw.line((0, bottom, width, bottom), fill=line, width=1)
        for i in range(5):
            cx = width * (i + 0.5) / 5
            draw.rounded_rectangle(
                (cx - unit * 0.7, bottom + nav * 0.25, cx + unit * 0.7, bottom + nav * 0.6),
                radius=unit // 4,
                fill=accent if i == 0 else muted,
            )
    left = 0
    if not portrait and width >= 900:  # sidebar menu
        side = round(width * 0.18)
        draw.rectangle((0, top, side, bottom), fill=panel)
        y = top + unit
        for i in range(rng.randrange(6, 12)):
            if y + unit * 2 > bottom:
                break
            colour = accent if i == 0 else muted
            draw.rounded_rectangle(
                (unit, y, unit * 2.2, y + unit * 1.2), radius=unit // 4, fill=colour
            )
            draw.text(
                (unit * 3, y + unit * 0.6),
                words(rng.randrange(1, 3)).capitalize(),
                fill=text,
                font=body,
                anchor="lm",
            )
            y += round(unit * 2.4)
        left = side

    # Feed of cards in the remaining area.
    margin = unit
    x0, x1 = left + margin, width - margin
    if not portrait and width - left > 1400:
        x1 = left + round((width - left) * 0.72)
    y = top + margin
    card = 0
    while y < bottom - unit * 4:
        lines = _wrap(words(rng.randrange(12, 60)).capitalize().split(), body, x1 - x0 - unit * 2)
        thumb = rng.random() < 0.35 and card < 3
        thumb_h = round((x1 - x0) * 0.4) if thumb else 0
        h = round(unit * 3.2 + len(lines) * unit * 1.35 + thumb_h + unit * 2.6)
        draw.rounded_rectangle((x0, y, x1, y + h), radius=unit // 2, fill=panel, outline=line)
        draw.ellipse((x0 + unit, y + unit * 0.6, x0 + unit * 3, y + unit * 2.6), fill=accent)
        draw.text(
            (x0 + unit * 3.6, y + unit * 1.0),
            f"@{rng.choice(_WORDS)}{rng.randrange(100)}",
            fill=text,
            font=body,
        )
        draw.text(
            (x1 - unit, y + unit * 1.1),
            f"{rng.randrange(1, 59)}m",
            fill=muted,
            font=small,
            anchor="ra",
        )
        ty = y + unit * 3.2
        for text_line in lines:
            draw.text((x0 + unit, ty), text_line, fill=text, font=body)
            ty += unit * 1.35
        if thumb:
            tw = x1 - x0 - unit * 2
            shot = photo_image(
                seed * 31 + card, max(16, round(tw)), max(16, thumb_h - unit // 2), detail=0.0
            )
            img.paste(shot, (round(x0 + unit), round(ty)))
            ty += thumb_h
        bx: float = x0 + unit
        for label in ("Reply", "Boost", "Share"):
            bw = body.getlength(label) + unit * 1.4
            draw.rounded_rectangle(
                (bx, ty + unit * 0.4, bx + bw, ty + unit * 2.0),
                radius=unit // 2,
                outline=line,
                fill=bg,
            )
            draw.text((bx + bw / 2, ty + unit * 1.2), label, fill=muted, font=small, anchor="mm")
            bx += bw + unit * 0.6
        y += h + margin
        card += 1
    if x1 < width - margin:  # right-hand panel
        draw.rounded_rectangle(
            (x1 + margin, top + margin, width - margin, top + margin + unit * 14),
            radius=unit // 2,
            fill=panel,
            outline=line,
        )
        ty = top + margin * 2
        for _ in range(8):
            draw.text((x1 + margin * 2, ty), words(3), fill=muted, font=small)
            ty += unit * 1.5
    return img


def screenshot_png(seed: int, width: int, height: int) -> bytes:
    """A UI-like PNG screenshot (see :func:`screenshot_image`)."""
    return _encode(screenshot_image(seed, width, height), "PNG")


# --------------------------------------------------------------------------- animations


def _moving_frames(
    seed: int,
    width: int,
    height: int,
    count: int,
    special_frame: SpecialFrame | None,
    detail: float,
) -> list[Image.Image]:
    """A camera pan over one photo with a moving ball; one frame optionally replaced."""
    _check_size(width, height)
    if count < 1:
        raise ValueError(f"an animation needs at least one frame, got {count}")
    special: tuple[int, Image.Image] | None = None
    if special_frame is not None:
        index, source = special_frame
        if not 0 <= index < count:
            raise ValueError(f"special frame index {index} is outside 0–{count - 1}")
        special = (index, ImageOps.fit(_as_image(source), (width, height)))
    pan = max(count * 2, width // 4)
    base = photo_image(seed, width + pan, height, detail=detail)
    rng = random.Random(f"frames:{seed}")
    colour = (rng.randrange(180, 256), rng.randrange(60, 200), rng.randrange(40, 120))
    radius = max(2, min(width, height) // 8)
    y0 = rng.uniform(0.3, 0.7) * height
    frames = []
    for i in range(count):
        if special is not None and i == special[0]:
            frames.append(special[1].copy())
            continue
        t = i / max(1, count - 1)
        frame = base.crop((round(t * pan), 0, round(t * pan) + width, height))
        cx = radius + t * (width - 2 * radius)
        cy = y0 + np.sin(t * np.pi * 2) * height * 0.2
        ImageDraw.Draw(frame).ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius), fill=colour
        )
        frames.append(frame)
    return frames


def animation_frames(
    seed: int, width: int, height: int, frames: int, special_frame: SpecialFrame | None = None
) -> list[Image.Image]:
    """The RGB frames the animation and video generators encode (for reference checks)."""
    return _moving_frames(seed, width, height, frames, special_frame, detail=0.1)


def animated_gif(
    seed: int,
    width: int,
    height: int,
    frames: int = 8,
    duration_ms: int = 100,
    *,
    special_frame: SpecialFrame | None = None,
    loop: int = 0,
) -> bytes:
    """An animated GIF (each frame quantised to its own 256-colour palette by Pillow)."""
    images = animation_frames(seed, width, height, frames, special_frame)
    return _encode(
        images[0], "GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=loop
    )


def animated_png(
    seed: int,
    width: int,
    height: int,
    frames: int = 8,
    duration_ms: int = 100,
    *,
    special_frame: SpecialFrame | None = None,
    loop: int = 0,
) -> bytes:
    """An animated PNG (APNG); a plain PNG decoder sees only its first frame."""
    images = animation_frames(seed, width, height, frames, special_frame)
    return _encode(
        images[0],
        "PNG",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=loop,
        compress_level=1,  # APNG frames are photos here: level 6 costs 4× for ~8 % size
    )


def animated_webp(
    seed: int,
    width: int,
    height: int,
    frames: int = 8,
    duration_ms: int = 100,
    *,
    special_frame: SpecialFrame | None = None,
    loop: int = 0,
    quality: int = 80,
) -> bytes:
    """An animated WebP (lossy frames)."""
    images = animation_frames(seed, width, height, frames, special_frame)
    return _encode(
        images[0],
        "WEBP",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=loop,
        quality=quality,
        method=2,
    )


# --------------------------------------------------------------------------- video

# Codec aliases accepted by :func:`video` → the FFmpeg encoder in PyAV's wheel.
_CODEC_ALIASES = {
    "h264": "libx264",
    "avc": "libx264",
    "hevc": "libx265",
    "h265": "libx265",
    "vp8": "libvpx",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "mpeg4": "mpeg4",
}


def video_encoders() -> list[str]:
    """Names of the video encoders this PyAV build has (hardware ones may still fail)."""
    found = []
    for name in sorted(av.codecs_available):
        try:
            codec = av.Codec(name, "w")
        except Exception:  # noqa: BLE001 — a decoder-only name raises; skip it
            continue
        if codec.type == "video":
            found.append(name)
    return found


def _encoder_options(encoder: str, keyint: int, crf: int | None) -> dict[str, str]:
    """Options giving fast, deterministic encodes with keyframes exactly every ``keyint``."""
    if encoder == "libx264":
        return {
            "preset": "veryfast",
            "crf": str(23 if crf is None else crf),
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
        }
    if encoder == "libx265":
        return {
            "preset": "ultrafast",
            "crf": str(28 if crf is None else crf),
            "x265-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:log-level=error",
        }
    if encoder in ("libvpx", "libvpx-vp9"):
        return {
            "deadline": "realtime",
            "cpu-used": "8",
            "crf": str((32 if encoder == "libvpx-vp9" else 10) if crf is None else crf),
            "b": "0" if encoder == "libvpx-vp9" else "2M",
            "keyint_min": str(keyint),
        }
    if encoder == "libsvtav1":
        return {"preset": "10", "crf": str(35 if crf is None else crf)}
    if encoder == "mpeg4":
        return {"qscale": "4" if crf is None else str(crf), "sc_threshold": "1000000000"}
    return {}


def _open_output(target: Any, container: str, extra: dict[str, str] | None = None) -> Any:
    # +bitexact: no random Matroska segment UID and no encoder version tags → same seed,
    # same bytes.
    options = {"fflags": "+bitexact", **(extra or {})}
    return av.open(target, mode="w", format=_FORMAT_NAMES[container], options=options)


def video(
    seed: int,
    width: int,
    height: int,
    seconds: float = 2.0,
    fps: int = 24,
    container: VideoContainer = "mp4",
    codec: str | None = None,
    special_frame: SpecialFrame | None = None,
    *,
    keyframe_interval: int | None = None,
    crf: int | None = None,
    audio: bool = False,
    faststart: bool = False,
) -> bytes:
    """A real encoded video, made in memory with PyAV's bundled FFmpeg.

    The picture is a camera pan over a photo with a moving ball. ``codec`` is an FFmpeg
    encoder name or an alias (h264, hevc, vp8, vp9, av1, mpeg4); None uses
    :data:`VIDEO_DEFAULT_CODECS`. Keyframes fall exactly every ``keyframe_interval`` frames
    (default ``2 × fps``; scene-cut detection is off, so a special frame is not promoted to
    a keyframe unless it lands on one). ``special_frame=(index, image)`` shows ``image``
    in that one frame. ``audio`` adds a quiet 440 Hz tone (AAC, or Opus in WebM).
    ``faststart`` moves the MP4/MOV index (moov) to the front, as web uploads usually have
    it; that pass needs a seekable file, so it goes through a temporary file.
    Width and height must be even (4:2:0 chroma).
    """
    if container not in _FORMAT_NAMES:
        raise ValueError(f"container must be one of {VIDEO_CONTAINERS}, got {container!r}")
    if width % 2 or height % 2 or width < 2 or height < 2:
        raise ValueError(f"video width and height must be even and positive, got {width}×{height}")
    count = max(1, round(seconds * fps))
    encoder = _CODEC_ALIASES.get(codec or "", codec or VIDEO_DEFAULT_CODECS[container])
    keyint = keyframe_interval or 2 * fps
    if keyint < 1:
        raise ValueError(f"keyframe_interval must be ≥ 1, got {keyint}")
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
    images = _moving_frames(seed, width, height, count, special_frame, detail=0.0)

    def write(target: Any) -> None:
        extra = {"movflags": "+faststart"} if faststart and container in ("mp4", "mov") else {}
        with _open_output(target, container, extra) as out:
            stream = out.add_stream(
                encoder, rate=fps, options=_encoder_options(encoder, keyint, crf)
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.gop_size = keyint
            if encoder == "libx265" and container in ("mp4", "mov"):
                stream.codec_context.codec_tag = "hvc1"  # the tag Apple players require
            sound = None
            if audio:
                sound = out.add_stream("libopus" if container == "webm" else "aac", rate=48000)
                sound.layout = "mono"
            for i, image in enumerate(images):
                frame = av.VideoFrame.from_image(image)
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
            if sound is not None:
                _write_tone(out, sound, count / fps)

    if faststart and container in ("mp4", "mov"):
        with tempfile.TemporaryDirectory(prefix="pictguard-media-") as folder:
            path = Path(folder) / f"video.{container}"
            write(str(path))
            return path.read_bytes()
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _write_tone(out: Any, stream: Any, seconds: float) -> None:
    rate = 48000
    chunk = stream.codec_context.frame_size or 960
    total = round(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n, dtype=np.float32)) / rate
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


# --------------------------------------------------------------------------- bad input


def truncated(data: bytes, fraction: float) -> bytes:
    """The first ``fraction`` (0–1) of ``data``: an interrupted upload or a partial object."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0–1, got {fraction}")
    return data[: int(len(data) * fraction)]


def corrupt_jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    """A JPEG whose header parses (type and size detectable) but whose pixels cannot decode.

    The frame header points a component at quantisation table 3, which the file never
    defines (libjpeg fails with "Quantization table 0x03 was not defined"), and part of the
    entropy-coded data is overwritten with random bytes.
    """
    data = bytearray(photo_jpeg(seed, width, height, quality=80, detail=0.2))
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        raise RuntimeError("Pillow wrote no baseline SOF0 marker")
    # SOF0: marker, length(2), precision(1), height(2), width(2), components(1), then
    # (id, sampling, quant table) per component: the first component's table byte.
    data[sof + 2 + 2 + 1 + 2 + 2 + 1 + 2] = 3
    sos = data.find(b"\xff\xda")
    rng = random.Random(f"corrupt:{seed}")
    start = sos + (len(data) - sos) // 3
    garbage = rng.randbytes(min(4096, (len(data) - start) // 2))
    data[start : start + len(garbage)] = garbage
    return bytes(data)


def _pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (offsets in the xref table are exact)."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def non_image(kind: NonImageKind, seed: int = 0) -> bytes:
    """A harmless non-image file of ``kind``: pdf, zip, txt, sql, html or svg.

    Buckets hold such files next to media (backups, exports, documents); SVG and HTML are
    what an attacker uploads hoping to be served inline.
    """
    rng = random.Random(f"non-image:{kind}:{seed}")
    words = " ".join(rng.choice(_WORDS) for _ in range(40))
    if kind == "pdf":
        return _pdf(f"pictguard test document {seed}")
    if kind == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            # Fixed timestamps keep the bytes deterministic.
            archive.writestr(zipfile.ZipInfo("readme.txt", (2024, 1, 1, 0, 0, 0)), words)
            archive.writestr(
                zipfile.ZipInfo("data.csv", (2024, 1, 1, 0, 0, 0)),
                "id,value\n" + "".join(f"{i},{rng.randrange(1000)}\n" for i in range(50)),
            )
        return out.getvalue()
    if kind == "txt":
        return (
            f"notes {seed}\n" + "\n".join(words[i : i + 60] for i in range(0, len(words), 60))
        ).encode()
    if kind == "sql":
        rows = ",\n".join(
            f"  ({i}, '{rng.choice(_WORDS)}', {rng.randrange(10**6)})" for i in range(20)
        )
        return (
            f"-- pictguard test dump {seed}\nCREATE TABLE post (id integer PRIMARY KEY, "
            f"title text, score integer);\nINSERT INTO post VALUES\n{rows};\n"
        ).encode()
    if kind == "html":
        return (
            f"<!doctype html><html><head><title>page {seed}</title></head><body><p>{words}</p>"
            "<script>console.log('not an image')</script></body></html>\n"
        ).encode()
    if kind == "svg":
        return (
            '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" '
            f'height="64"><rect width="64" height="64" fill="#{rng.randrange(1 << 24):06x}"/>'
            "<script>alert(1)</script></svg>\n"
        ).encode()
    raise ValueError(f"unknown non-image kind {kind!r}; use one of {NON_IMAGE_KINDS}")


def mislabelled(seed: int = 0) -> list[MediaItem]:
    """Files whose declared type or name lies about their bytes.

    PNG sent as ``video/mp4``, JPEG named ``.png``, MP4 sent as ``image/jpeg``, PDF sent as
    ``image/jpeg``, WebP sent as ``image/gif`` and HTML sent as ``image/png``.
    """
    png = png_photo(seed, 320, 240, detail=0.0)
    jpeg = photo_jpeg(seed, 640, 480)
    mp4 = video(seed, 160, 120, seconds=1.0, fps=10)
    pdf = non_image("pdf", seed)
    webp = webp_image(seed, 480, 360)
    html = non_image("html", seed)
    cases: list[tuple[str, bytes, str, str | None, tuple[int, int] | None]] = [
        ("clip.mp4", png, "video/mp4", "image/png", (320, 240)),
        ("photo.png", jpeg, "image/png", "image/jpeg", (640, 480)),
        ("photo.jpg", mp4, "image/jpeg", "video/mp4", (160, 120)),
        ("scan.jpg", pdf, "image/jpeg", "application/pdf", None),
        ("funny.gif", webp, "image/gif", "image/webp", (480, 360)),
        ("avatar.png", html, "image/png", "text/html", None),
    ]
    return [
        MediaItem(
            name=name,
            data=data,
            content_type=declared,
            kind="mislabelled",
            real_type=real,
            width=size[0] if size else None,
            height=size[1] if size else None,
            note=f"declared {declared}, really {real}",
        )
        for name, data, declared, real, size in cases
    ]


def declared_huge_image(
    fmt: Literal["png", "gif", "jpeg"], width: int = 60000, height: int = 60000
) -> bytes:
    """A tiny file whose header declares ``width``×``height`` pixels (a decompression bomb's
    first step): PNG with a valid IHDR and no data, GIF with a huge logical screen, JPEG
    with a patched frame header and its pixel data cut short."""
    if fmt == "png":

        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body) & 0xFFFFFFFF
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    if fmt == "gif":
        if width > 0xFFFF or height > 0xFFFF:
            raise ValueError("GIF dimensions are 16-bit: at most 65535")
        data = bytearray(_encode(Image.new("P", (8, 8), 1), "GIF"))
        data[6:10] = struct.pack("<HH", width, height)
        return bytes(data)
    if fmt == "jpeg":
        if width > 0xFFFF or height > 0xFFFF:
            raise ValueError("JPEG dimensions are 16-bit: at most 65535")
        data = bytearray(photo_jpeg(0, 64, 64))
        sof = data.find(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
        return bytes(data[: data.find(b"\xff\xda") + 64])
    raise ValueError(f"fmt must be png, gif or jpeg, got {fmt!r}")


# --------------------------------------------------------------------------- hostile videos


def truncated_video(seed: int = 0, fraction: float = 0.5, *, fragmented: bool = False) -> bytes:
    """An MP4 cut off part-way (an interrupted upload).

    Plain MP4 keeps its index (moov) at the end, so the cut file cannot even be opened.
    ``fragmented=True`` cuts a fragmented MP4 instead (index up front, data in fragments):
    it opens, and the frames before the cut decode, then the data stops mid-fragment.
    """
    if not fragmented:
        return truncated(video(seed, 320, 240, seconds=2.0, fps=24), fraction)
    buffer = io.BytesIO()
    images = _moving_frames(seed, 320, 240, 48, None, detail=0.0)
    frag = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    with _open_output(buffer, "mp4", frag) as out:
        stream = out.add_stream("libx264", rate=24, options=_encoder_options("libx264", 12, None))
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return truncated(buffer.getvalue(), fraction)


def huge_frame_video(width: int = 16000, height: int = 16000) -> bytes:
    """A ~700-byte WebM (VP8) whose container and keyframe both declare ``width``×``height``.

    Made by encoding two flat 256×256 frames and patching the Matroska PixelWidth/Height
    elements and the VP8 keyframe header. FFmpeg believes the size: decoding the first
    frame allocates about 1.5 × width × height bytes (≈ 400 MB at the default) before
    failing on the missing data. VP8 sizes are 14-bit (≤ 16383); keep (w+128)·(h+128)
    under 2³¹/8 or FFmpeg rejects the size outright instead.
    """
    if not (1 <= width <= 16383 and 1 <= height <= 16383):
        raise ValueError(f"VP8 frame sizes are 14-bit (1–16383), got {width}×{height}")
    buffer = io.BytesIO()
    with _open_output(buffer, "webm") as out:
        options = {"deadline": "realtime", "cpu-used": "16", "b": "100k"}
        stream = out.add_stream("libvpx", rate=1, options=options)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_image(Image.new("RGB", (256, 256), (90, 120, 160)))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buffer.getvalue()
    # 256 needs two bytes, so the EBML elements (ID 0xB0 / 0xBA, size 0x82) keep their
    # length when patched; the VP8 keyframe start code 9D 01 2A is followed by the
    # 14-bit little-endian width and height.
    patches = (
        (b"\xb0\x82\x01\x00", b"\xb0\x82" + struct.pack(">H", width)),
        (b"\xba\x82\x01\x00", b"\xba\x82" + struct.pack(">H", height)),
        (b"\x9d\x01\x2a\x00\x01\x00\x01", b"\x9d\x01\x2a" + struct.pack("<HH", width, height)),
    )
    for old, new in patches:
        if data.count(old) != 1:
            raise RuntimeError(f"expected one {old.hex()} in the WebM, found {data.count(old)}")
        data = data.replace(old, new)
    return data


def _repeated_h264(pts_list: Sequence[int], fps: int, size: int) -> bytes:
    """An MP4 whose every frame is the same tiny H.264 IDR packet at the given timestamps.

    Muxing a copy of one packet costs microseconds, where encoding costs a frame's worth:
    this is how thousands of frames or hours of video are made in a fraction of a second.
    """
    buffer = io.BytesIO()
    with _open_output(buffer, "mp4") as out:
        options = {"preset": "ultrafast", "x264-params": "keyint=1"}
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        packets = []
        for i in range(2):
            frame = av.VideoFrame.from_image(Image.new("RGB", (size, size), (90, 120, 160)))
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode(None)
        # The second IDR lacks the encoder-settings SEI the first carries (~600 bytes).
        payload, time_base = bytes(packets[-1]), packets[-1].time_base
        for pts in pts_list:
            packet = av.Packet(payload)
            packet.pts = packet.dts = pts
            packet.duration = 1
            packet.time_base = time_base
            packet.stream = stream
            packet.is_keyframe = True
            out.mux(packet)
    return buffer.getvalue()


def many_frames_video(frames: int = 10_000, fps: int = 1000, size: int = 16) -> bytes:
    """An MP4 of ``frames`` tiny (``size``×``size``) frames: a per-frame cost bomb.

    At the defaults: 10,000 frames in 10 s of declared duration.
    """
    return _repeated_h264(range(frames), fps, size)


def long_duration_video(seconds: int = 36_000, *, real: bool = False, size: int = 16) -> bytes:
    """A tiny MP4 lasting ``seconds`` (10 hours by default).

    ``real=False``: two frames, at 0 s and at ``seconds − 1`` — the container declares the
    whole duration while holding two frames (a sampler that seeks every second seeks
    ``seconds`` times). ``real=True``: one frame every second, ``seconds`` frames in all.
    """
    pts = range(seconds) if real else [0, seconds - 1]
    return _repeated_h264(pts, 1, size)


def hostile_videos(seed: int = 0) -> list[MediaItem]:
    """One of each hostile video, described in ``note`` (about 0.2 s for all six)."""
    mp4, webm = CONTENT_TYPES["mp4"], CONTENT_TYPES["webm"]
    cases: list[tuple[str, bytes, str, tuple[int, int], int | None, str]] = [
        ("truncated.mp4", truncated_video(seed), mp4, (320, 240), None,
         "MP4 cut in half: its index (moov) is lost, the container cannot open"),
        ("truncated-fragmented.mp4", truncated_video(seed, fragmented=True), mp4, (320, 240),
         None, "fragmented MP4 cut in half: opens, early frames decode, then the data stops"),
        ("huge-frame.webm", huge_frame_video(), webm, (16000, 16000), None,
         "VP8 WebM declaring 16000×16000 in ~700 bytes; decoding allocates ~400 MB"),
        ("many-frames.mp4", many_frames_video(), mp4, (16, 16), 10_000,
         "10,000 frames of 16×16 in 10 s"),
        ("long-declared.mp4", long_duration_video(), mp4, (16, 16), 2,
         "declares 10 hours, holds two frames"),
        ("long-real.mp4", long_duration_video(7200, real=True), mp4, (16, 16), 7200,
         "2 hours at one 16×16 frame per second"),
    ]  # fmt: skip
    return [
        MediaItem(name, data, mime, "hostile", mime, size[0], size[1], frames, note)
        for name, data, mime, size, frames, note in cases
    ]


# ------------------------------------------------------------------ PDQ and near-duplicates


def pdq_hash(data: ImageSource) -> tuple[str, int]:
    """PDQ of an image (bytes or Pillow image, EXIF orientation applied): (64 hex, quality).

    The hex is the bit order ``pdqhash`` returns read as one big-endian number, as
    ``classify.hashing`` and python-threatexchange write it.
    """
    rgb = np.ascontiguousarray(np.asarray(_as_image(data)), dtype=np.uint8)
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance between two 64-hex-digit PDQ hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def cropped(data: ImageSource, per_side: float | Sequence[float], *, quality: int = 90) -> bytes:
    """A JPEG of the image with ``per_side`` (a fraction, or four: left, top, right, bottom)
    cut from its edges.

    PDQ is not crop-resistant: on these photos a 1 % cut per side moves the hash by up to
    ~25 bits, 2 % by 30–55 and 5 % by 70–110 (beyond the usual match threshold of 31), and
    other synthetic content (gradients, fractals, screenshots) behaves the same. Use this
    for recall curves; :func:`near_duplicates` keeps its crop within 1 %.
    """
    image = _as_image(data)
    width, height = image.size
    sides = [float(per_side)] * 4 if isinstance(per_side, int | float) else list(per_side)
    if len(sides) != 4 or not all(0 <= f < 0.5 for f in sides):
        raise ValueError(f"per_side must be one or four fractions within 0–0.5, got {per_side}")
    left, top, right, bottom = sides
    box = (
        round(width * left),
        round(height * top),
        round(width * (1 - right)),
        round(height * (1 - bottom)),
    )
    return _encode(image.crop(box), "JPEG", quality=quality)


def near_duplicates(data: bytes, seed: int = 0) -> dict[str, bytes]:
    """Copies of an image a PDQ matcher should still match: within distance 31 of the
    original on the photo-like media here (measured worst case 24, see the tests).

    Keys: ``resize_50`` / ``resize_75`` (JPEG q85 at half / three-quarter size),
    ``jpeg_q50`` (re-encoded at quality 50), ``webp`` (lossy WebP q75), ``png`` (lossless,
    fast compression), ``crop`` (0.2–1 % cut from each side, chosen by ``seed``, JPEG q90 —
    see :func:`cropped` for why not more), ``brighter`` / ``darker`` (brightness
    ×1.04–1.08 / ×0.92–0.96, JPEG q90).
    """
    image = _as_image(data)
    width, height = image.size
    rng = random.Random(f"near-duplicates:{seed}")

    def scaled(factor: float) -> Image.Image:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        return image.resize(size, Image.Resampling.LANCZOS)

    def brightness(low: float, high: float) -> Image.Image:
        return ImageEnhance.Brightness(image).enhance(rng.uniform(low, high))

    return {
        "resize_50": _encode(scaled(0.5), "JPEG", quality=85),
        "resize_75": _encode(scaled(0.75), "JPEG", quality=85),
        "jpeg_q50": _encode(image, "JPEG", quality=50),
        "webp": _encode(image, "WEBP", quality=75, method=2),
        "png": _encode(image, "PNG", compress_level=1),
        "crop": cropped(image, [rng.uniform(0.002, 0.01) for _ in range(4)]),
        "brighter": _encode(brightness(1.04, 1.08), "JPEG", quality=90),
        "darker": _encode(brightness(0.92, 0.96), "JPEG", quality=90),
    }


# --------------------------------------------------------------------------- sets

MIN_UPLOAD = 20_000
MAX_UPLOAD = 5_000_000


def _within(make: Callable[[int], bytes], quality: int) -> bytes:
    """Encode at ``quality``, stepping it down (too big) or up (too small) into the
    20 KB–5 MB upload range."""
    data = make(quality)
    while len(data) > MAX_UPLOAD and quality > 40:
        quality -= 8
        data = make(quality)
    while len(data) < MIN_UPLOAD and quality < 96:
        quality = min(96, quality + 6)
        data = make(quality)
    return data


def _dims(long_side: int, aspect: tuple[int, int]) -> tuple[int, int]:
    a, b = aspect
    if a >= b:
        return long_side, max(2, round(long_side * b / a / 2) * 2)
    return max(2, round(long_side * a / b / 2) * 2), long_side


_ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3), (9, 16))
_ASPECT_WEIGHTS = (30, 12, 14, 8, 20, 6, 10)
_LONG_SIDES = (640, 800, 1024, 1280, 1600, 2048, 3000, 4000)
_LONG_SIDE_WEIGHTS = (10, 12, 14, 16, 12, 14, 10, 12)
_SCREENS = ((1920, 1080), (1280, 720), (2560, 1440), (1080, 2340), (750, 1334), (1366, 768))

_STAMP_RANGES = ((1, 13), (1, 29), (0, 24), (0, 60), (0, 60))

# Every block of 20 uploads holds exactly this mix, in a seeded order: proportions hold for
# any n ≥ 20 and each kind appears.
_UPLOAD_BLOCK = ("jpeg",) * 14 + ("screenshot",) * 2 + ("webp",) * 2 + ("gif", "png")


def _upload_kind(index: int, seed: int) -> str:
    block = list(_UPLOAD_BLOCK)
    random.Random(f"upload-block:{seed}:{index // len(block)}").shuffle(block)
    return block[index % len(block)]


def _upload_item(index: int, seed: int) -> MediaItem:
    kind = _upload_kind(index, seed)
    rng = random.Random(f"upload:{seed}:{index}")
    sub = rng.getrandbits(31)
    month, day, hour, minute, second = (rng.randrange(a, b) for a, b in _STAMP_RANGES)
    stamp = f"2024{month:02d}{day:02d}_{hour:02d}{minute:02d}{second:02d}"
    aspect = rng.choices(_ASPECTS, _ASPECT_WEIGHTS)[0]
    if kind == "jpeg":
        w, h = _dims(rng.choices(_LONG_SIDES, _LONG_SIDE_WEIGHTS)[0], aspect)
        quality = rng.choice((75, 80, 85, 90, 92, 95))
        photo = photo_image(sub, w, h, detail=rng.uniform(0.0, 1.0))
        data = _within(lambda q: _encode(photo, "JPEG", quality=q), quality)
        name = rng.choice((f"IMG_{stamp}.jpg", f"PXL_{stamp}.jpg", f"image-{sub:08x}.jpg"))
        return MediaItem(name, data, "image/jpeg", "photo", "image/jpeg", w, h)
    if kind == "screenshot":
        w, h = rng.choice(_SCREENS)
        name = rng.choice((f"Screenshot_{stamp}.png", f"Screenshot from {stamp}.png"))
        data = screenshot_png(sub, w, h)
        return MediaItem(name, data, "image/png", "screenshot", "image/png", w, h)
    if kind == "webp":
        w, h = _dims(rng.choice((640, 1024, 1280, 1600, 2048)), aspect)
        photo = photo_image(sub, w, h)
        quality = rng.choice((75, 80, 90))
        data = _within(lambda q: _encode(photo, "WEBP", quality=q, method=4), quality)
        return MediaItem(f"image-{sub:08x}.webp", data, "image/webp", "photo", "image/webp", w, h)
    if kind == "gif":
        w, h = _dims(rng.choice((320, 400, 480)), rng.choice(((4, 3), (16, 9), (1, 1))))
        frames = rng.randrange(6, 17)
        data = animated_gif(sub, w, h, frames, rng.choice((40, 60, 100)))
        gif = "image/gif"
        return MediaItem(f"reaction-{sub:08x}.gif", data, gif, "animation", gif, w, h, frames)
    w, h = _dims(rng.choice((640, 800, 1024)), aspect)
    data = png_photo(sub, w, h)
    return MediaItem(f"image-{sub:08x}.png", data, "image/png", "photo", "image/png", w, h)


def upload_mix(n: int, seed: int = 0) -> list[MediaItem]:
    """``n`` uploads as an instance receives them, each 20 KB–5 MB.

    Each block of 20 holds 14 photo JPEGs (long side 640–4,000 px, quality 75–95, portrait
    and landscape), 2 PNG screenshots (phone and desktop), 2 lossy WebP photos, 1 animated
    GIF (320–480 px, 6–16 frames) and 1 PNG photo, in a seeded order. Item ``i`` depends
    only on ``(seed, i)``, so ``upload_mix(32, s)`` is the first half of
    ``upload_mix(64, s)``. Encoder quality is stepped to keep each file in 20 KB–5 MB.
    """
    return [_upload_item(i, seed) for i in range(n)]


def journey_set(seed: int = 0) -> list[MediaItem]:
    """A small folder for admin journey tests: 8 images from 320 px to 4,000 px and from
    about 20 KB to 3 MB (JPEG, PNG, WebP), a corrupt JPEG, a PDF and a text file.

    Eleven files, about 4.5 MB in all; generated in about 1.5 s.
    """
    s = seed * 100
    stills: list[tuple[str, MediaKind, int, int, bytes, str]] = [
        ("photo-0320x0240.jpg", "photo", 320, 240, photo_jpeg(s + 1, 320, 240, 92, detail=0.8), ""),
        ("photo-0800x0600.jpg", "photo", 800, 600, photo_jpeg(s + 2, 800, 600), ""),
        (
            "photo-1920x1080-rotated.jpg",
            "photo",
            1920,
            1080,
            photo_jpeg(s + 3, 1920, 1080, orientation=6),
            "EXIF orientation 6: shows as 1080×1920",
        ),
        (
            "photo-4000x3000.jpg",
            "photo",
            4000,
            3000,
            photo_jpeg(s + 4, 4000, 3000, 92, detail=0.9),
            "",
        ),
        ("screenshot-1280x0800.png", "screenshot", 1280, 800, screenshot_png(s + 5, 1280, 800), ""),
        ("photo-0640x0480.png", "photo", 640, 480, png_photo(s + 6, 640, 480), ""),
        ("photo-1600x1200.webp", "photo", 1600, 1200, webp_image(s + 7, 1600, 1200), ""),
        (
            "screenshot-0720x1560.webp",
            "screenshot",
            720,
            1560,
            webp_image(s + 8, 720, 1560, lossless=True, content="screenshot"),
            "lossless",
        ),
    ]
    items = []
    for name, kind, width, height, data, note in stills:
        mime = CONTENT_TYPES[name.rsplit(".", 1)[1]]
        items.append(MediaItem(name, data, mime, kind, mime, width, height, note=note))
    jpeg, pdf, txt = CONTENT_TYPES["jpg"], CONTENT_TYPES["pdf"], CONTENT_TYPES["txt"]
    items += [
        MediaItem("corrupt.jpg", corrupt_jpeg(s + 9), jpeg, "corrupt", jpeg, 640, 480,
                  note="header parses, pixels do not decode"),
        MediaItem("document.pdf", non_image("pdf", seed), pdf, "non_image", pdf),
        MediaItem("notes.txt", non_image("txt", seed), txt, "non_image", txt),
    ]  # fmt: skip
    return items


def write_set(
    items: Sequence[MediaItem],
    folder: str | os.PathLike[str],
    *,
    layout: Literal["plain", "pictrs"] = "plain",
) -> list[Path]:
    """Write ``items`` under ``folder`` and return their paths, in order.

    ``plain``: the item's own name (``-2``, ``-3`` … added on a clash). ``pictrs``: the
    pict-rs ≥ 0.5.7 object layout — ten two-hex-digit directories, then a 12-hex file name
    with the extension of what the bytes really are — derived from the content and the
    position, so it is deterministic.
    """
    if layout not in ("plain", "pictrs"):
        raise ValueError(f"layout must be 'plain' or 'pictrs', got {layout!r}")
    root = Path(folder)
    paths: list[Path] = []
    used: set[Path] = set()
    for index, item in enumerate(items):
        if layout == "pictrs":
            digest = hashlib.sha256(b"%d:" % index + item.data).hexdigest()
            real = item.real_type or item.content_type
            ext = _EXTENSIONS.get(real, Path(item.name).suffix.lstrip(".") or "bin")
            dirs = (digest[i : i + 2] for i in range(0, 20, 2))
            path = root.joinpath(*dirs, f"{digest[20:32]}.{ext}")
        else:
            path = root / item.name
            stem, suffix, n = path.stem, path.suffix, 2
            while path in used:
                path = root / f"{stem}-{n}{suffix}"
                n += 1
        used.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
        paths.append(path)
    return paths
