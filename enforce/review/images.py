"""What the reviewer's browser receives instead of the image: made on the server.

A thumbnail is the image downscaled first (so no detail survives to be blurred back),
then blurred heavily with a Gaussian, then turned grey, and encoded afresh as JPEG: the
browser never receives the original bytes. A reveal is re-encoded too (never the stored
file, which may be a polyglot or an SVG with script), downscaled to a viewing size.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from enforce.review.journal import BlurLevel
from pipeline.errors import PictguardError

log = logging.getLogger(__name__)

THUMB_PX = 192
REVEAL_PX = 1024
# Gaussian radius as a share of the thumbnail's longer side.
BLUR_SHARE: dict[str, float] = {"strong": 0.08, "medium": 0.05, "light": 0.03}
# Decoding a preview must not become a decompression bomb.
MAX_PIXELS = 80_000_000
MAX_PREVIEW_BYTES = 128 * 1024 * 1024


class PreviewError(PictguardError, ValueError):
    """The bytes are not an image (or video) this console can preview."""

    exit_code = 1


def first_frame(data: bytes, target: int) -> Image.Image:
    """The first frame of an image (or of a video, through PyAV), oriented, as RGB."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise PreviewError(f"{image.width}×{image.height} is too large to preview")
        # JPEG can decode straight to a smaller size: far less work and memory.
        image.draft("RGB", (target * 2, target * 2))
        image.seek(0)
        oriented = ImageOps.exif_transpose(image)
        return (oriented if oriented is not None else image).convert("RGB")
    except PreviewError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        return _video_frame(data, exc)


def _video_frame(data: bytes, cause: Exception) -> Image.Image:
    try:
        import av  # bundled FFmpeg; only for what Pillow cannot open
    except ImportError:  # pragma: no cover - av is a dependency
        raise PreviewError(f"cannot decode: {cause}") from None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            if stream.width * stream.height > MAX_PIXELS:
                raise PreviewError("video frame too large to preview")
            for frame in container.decode(stream):
                image: Any = frame.to_image()
                return image.convert("RGB")  # type: ignore[no-any-return]
    except PreviewError:
        raise
    except Exception as exc:  # noqa: BLE001 — FFmpeg raises many kinds; all mean "no preview"
        raise PreviewError(f"cannot decode as image ({cause}) or video ({exc})") from None
    raise PreviewError("no frame to preview")


def blurred_thumbnail(
    data: bytes, *, blur: BlurLevel = "strong", greyscale: bool = True, size: int = THUMB_PX
) -> bytes:
    """A JPEG thumbnail: downscaled to ``size``, blurred, grey (unless asked otherwise)."""
    image = first_frame(data, size)
    image.thumbnail((size, size), Image.Resampling.BOX)
    radius = max(2.0, BLUR_SHARE[blur] * max(image.size))
    # Padding with the edge colours first keeps the blur from darkening the borders.
    pad = int(radius * 2)
    padded = ImageOps.expand(image, border=pad, fill=_mean_colour(image))
    blurred = padded.filter(ImageFilter.GaussianBlur(radius)).crop(
        (pad, pad, pad + image.width, pad + image.height)
    )
    if greyscale:
        blurred = blurred.convert("L")
    return _jpeg(blurred)


def revealed(data: bytes, *, greyscale: bool = True, size: int = REVEAL_PX) -> bytes:
    """The image for a deliberate reveal: re-encoded, at most ``size`` pixels a side."""
    image = first_frame(data, size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    if greyscale:
        image = image.convert("L")
    return _jpeg(image, quality=88)


def placeholder(text: str, size: int = THUMB_PX) -> bytes:
    """A grey tile saying why there is no preview (missing, undecodable)."""
    tile = Image.new("L", (size, size), 90)
    draw = ImageDraw.Draw(tile)
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if len(candidate) > 22 and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    for n, text_line in enumerate(lines[:6]):
        draw.text((10, 10 + 16 * n), text_line, fill=230)
    return _jpeg(tile)


def _mean_colour(image: Image.Image) -> tuple[int, int, int]:
    tiny = image.resize((1, 1), Image.Resampling.BOX)
    pixel: Any = tiny.getpixel((0, 0))
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def _jpeg(image: Image.Image, quality: int = 80) -> bytes:
    out = io.BytesIO()
    # No EXIF, no ICC, nothing of the original rides along.
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
