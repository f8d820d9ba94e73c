"""Image decoding: bytes → a few RGB frames, their PDQ hash and the models' inputs.

Everything here is synchronous and CPU-bound; :class:`DecodePool` runs it in threads or
processes so the event loop never decodes. Nothing raises for bad input: :func:`prepare`
returns a :class:`DecodeFailure` carrying the error reason the verdict will show.

Frames are only as large as their users need: the decoder picks the largest integer
shrink factor that keeps the frame's short side ≥ ``hash_size`` (PDQ) and every
preprocessor's side ≥ its input size, lets libjpeg apply it while decoding (DCT scaling,
1/2…1/8) and applies the rest with ``Image.reduce`` — strip by strip, before any mode
conversion, so a 64-MP image never exists as a full-size RGB or RGBA copy. PDQ then comes
from that frame through :func:`classify.hashing.pdq_from_frame`, within a few bits of the
reference computed on every pixel.

The type comes from the bytes (:func:`pipeline.mediatype.sniff`), never from a header:
video containers go to :mod:`classify.video`, everything else to Pillow, restricted to
:data:`ALLOWED_FORMATS`. HEIC/HEIF (``pillow-heif``) and JPEG XL (``pillow-jxl-plugin``)
are registered with Pillow once, when this module is imported; AVIF is Pillow's own.
Animations (GIF, APNG, animated WebP) and videos give up to ``max_frames`` sampled frames,
each with its index, time and PDQ (:class:`FrameInfo`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import struct
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pillow_heif
import pillow_jxl  # noqa: F401 — registers the JPEG XL plugin with Pillow
from PIL import Image, UnidentifiedImageError

from classify.hashing import ImageHashes, content_hashes, pdq_from_frame
from classify.preprocess import Preprocessor
from pipeline import mediatype
from pipeline.errors import PictguardError
from pipeline.events import ErrorReason
from pipeline.hashlists import EntryHashes

log = logging.getLogger(__name__)

# Only plain raster formats. Pillow can open many more (EPS runs Ghostscript, FITS, PSD,
# …); a media store has no business with them and each is attack surface.
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "GIF",
    "WEBP",
    "BMP",
    "TIFF",
    "AVIF",
    "HEIF",
    "JXL",
    "ICO",
)
_SUPPORTED_MIMES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
        "image/heif",
        "image/jxl",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/apng",
    }
)
# JPEG XL: pillow-jxl-plugin decodes the whole image when it opens the file, so the size
# is read from the codestream's SizeHeader first; these are its aspect-ratio codes.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
# EXIF orientation → the transpose that undoes it (as ImageOps.exif_transpose does).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Walking an animation costs pixels × frames; frames past this pixel budget are not sampled.
_FRAME_WALK_FACTOR = 4
_BACKGROUND = (255, 255, 255)
# Pixels converted at a time when a big image is shrunk strip by strip.
_STRIP_PIXELS = 1 << 20
# libjpeg decodes at these fractions of full size.
_JPEG_SCALES = (8, 4, 2)

# What Pillow raises for truncated, corrupt or hostile data, across its format plugins.
_PILLOW_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    struct.error,
    # pillow-jxl-plugin: libjxl's "Generic Error" for a broken JPEG XL codestream.
    RuntimeError,
)

# pictguard enforces its own pixel limit (``max_pixels``) before any pixel is decoded;
# Pillow's warning between its own two limits would only be noise in the logs.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# HEIC/HEIF through libheif; it decodes when the pixels are loaded, after the size checks.
pillow_heif.register_heif_opener()


class DecodeError(PictguardError):
    """An input cannot be turned into pixels; ``reason`` is the verdict's error reason."""

    def __init__(self, reason: ErrorReason, detail: str, *, sha256: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.sha256 = sha256


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """Limits a video is checked against before its first frame decodes (the settings
    ``classify.video_*``), and its decoder's threads."""

    max_pixels: int = 3840 * 2160
    max_duration_s: float = 3600.0
    max_memory_mb: int = 512
    threads: int = 1


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What to decode and which model inputs to produce (picklable for process pools).

    ``hash_size``: frames are shrunk no further than this on their short side, for PDQ.
    Measured with ``bench/classify.py --pdq-interop`` on 1,000 generated images
    (tests/media.py photos, photos stored sideways with EXIF, screenshots, 1–2 % crops,
    re-encodes, WebP), against the reference on every pixel, and on 1,000 near-duplicate
    pairs (resized, re-encoded, PNG, WebP, cropped ≤ 1 %, brighter, darker):

    ========  ============  ===  ===  ============================================
    hash_size ≤ 10 bits     p99  max  near-duplicates the reference matches, lost
    ========  ============  ===  ===  ============================================
    64        90.5 %        28   40   0 of 992
    96        92.8 %        28   48   0 of 992
    128       95.2 %        22   28   0 of 992
    192       97.9 %        12   22   1 of 992
    256       100 %         8    10   1 of 992
    ========  ============  ===  ===  ============================================

    The one pair lost at 192 and up is a screenshot crop the reference matches at exactly
    30 bits and pictguard at 32: two bits of rounding, which no frame size removes (a 512-px
    frame, the old default, gives 32 too). Smaller frames keep that pair only by landing
    farther from the reference on everything else. The price of 256 over 128 is a 1/2-
    instead of a 1/4-scale decode of an 800×600 JPEG (about 0.3 ms of CPU) for the hash-only
    path; with models loaded the frame is that size anyway. 256 is the default: every hash
    within 10 bits of the reference, 99 % within 8.
    ``draft_size``: the frame's long side is kept at least this (0: only what
    ``hash_size`` and the preprocessors need).
    ``max_frames``: frames sampled from an animation or a video; ``time_limit_s``: what
    decoding one of them may take before the frames decoded so far are used.
    """

    max_pixels: int = 64_000_000
    max_frames: int = 16
    hash_size: int = 256
    draft_size: int = 0
    preprocessors: tuple[Preprocessor, ...] = ()
    time_limit_s: float = 10.0
    video: VideoLimits = VideoLimits()


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One sampled frame: its number in display order, time, PDQ, and whether the video
    has a keyframe there."""

    index: int
    time_s: float | None
    pdq: str | None
    pdq_quality: int | None
    keyframe: bool = False


@dataclass(slots=True)
class Prepared:
    """A decoded image, animation or video: its PDQ (of the first sampled frame), each
    sampled frame's :class:`FrameInfo` and per-frame model inputs.

    ``limited`` says why fewer frames were decoded than planned (the time limit, data
    that stops short); ``n_frames`` is the frame count of the whole file.
    """

    format: str
    width: int
    height: int
    n_frames: int
    pdq: str | None
    pdq_quality: int | None
    frame_size: tuple[int, int] = (0, 0)  # first frame after EXIF rotation and shrinking
    # inputs[frame][i] is the array for preprocessors[i]
    inputs: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    decode_ms: float = 0.0
    media_type: str = ""  # from the bytes
    frames: list[FrameInfo] = field(default_factory=list)  # one per entry of ``inputs``
    duration_s: float | None = None
    limited: str | None = None
    pdq_ms: float = 0.0  # the PDQ hashes alone, inside decode_ms

    @property
    def multi_frame(self) -> bool:
        """An animation or a video (even one whose sample is a single frame)."""
        return self.n_frames > 1 or mediatype.is_video(self.media_type)


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why an input could not be decoded."""

    reason: ErrorReason
    detail: str


def prepare(data: bytes, options: DecodeOptions) -> Prepared | DecodeFailure:
    """Decode ``data``, hash its sampled frames with PDQ and run the preprocessors.

    Never raises for bad input; a bug (or MemoryError) still propagates.
    """
    start = time.perf_counter()
    try:
        prepared = _prepare(data, options)
    except DecodeError as exc:
        return DecodeFailure(exc.reason, exc.detail)
    prepared.decode_ms = (time.perf_counter() - start) * 1000
    return prepared


def _prepare(data: bytes, options: DecodeOptions) -> Prepared:
    if not data:
        raise DecodeError(ErrorReason.EMPTY, "0 bytes")
    media_type = mediatype.sniff(data)
    if mediatype.is_video(media_type):
        if media_type not in mediatype.VIDEO_TYPES:
            raise DecodeError(ErrorReason.UNSUPPORTED_TYPE, media_type)
        # Imported here: classify.video imports this module.
        from classify.video import prepare_video

        return prepare_video(data, media_type, options)
    if media_type == "image/jxl":
        _check_jxl_size(data, options.max_pixels)
    image = _open(data)
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{image.format} with size {width}x{height}")
        if width * height > options.max_pixels:
            raise DecodeError(
                ErrorReason.TOO_LARGE,
                f"{image.format} {width}x{height} exceeds {options.max_pixels} pixels",
            )
        fmt = image.format or "unknown"
        orientation = _orientation(image)
        try:
            sampled = _read_frames(image, orientation, options)
        except DecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise DecodeError(ErrorReason.TOO_LARGE, f"{fmt}: {exc}") from None
        except _PILLOW_ERRORS as exc:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{fmt}: {exc}") from None
    swap, reversed_axes = _AXES.get(orientation, (False, (False, False)))
    displayed = (height, width) if swap else (width, height)
    infos = []
    hashing = time.perf_counter()
    for frame, (index, time_s) in zip(sampled.images, sampled.where, strict=True):
        pdq, quality = pdq_from_frame(
            np.asarray(frame.convert("L")),
            displayed,
            scale=sampled.scale,
            reversed_axes=reversed_axes,
        )
        infos.append(FrameInfo(index, time_s, pdq, quality, index == 0))
    pdq_ms = (time.perf_counter() - hashing) * 1000
    inputs = [tuple(pre(frame) for pre in options.preprocessors) for frame in sampled.images]
    return Prepared(
        fmt,
        width,
        height,
        sampled.n_frames,
        infos[0].pdq,
        infos[0].pdq_quality,
        sampled.images[0].size,
        inputs,
        media_type=media_type,
        frames=infos,
        duration_s=sampled.duration_s,
        limited=sampled.limited,
        pdq_ms=pdq_ms,
    )


def hash_file(path: Path, *, hash_size: int = 256, max_pixels: int = 64_000_000) -> ImageHashes:
    """sha256/MD5/SHA-1 and PDQ of an image file, decoded the way the engine decodes it.

    Raises :class:`DecodeError` when the file is not a decodable image; the sha256 alone
    is still useful then and is part of the error.
    """
    data = path.read_bytes()
    digests = content_hashes(data)
    if mediatype.is_video(mediatype.sniff(data)):
        # Video lists carry the file's MD5 (and sha256); a frame's PDQ is an image's.
        return ImageHashes(digests.sha256, None, None, digests.md5, digests.sha1)
    result = prepare(data, DecodeOptions(max_pixels=max_pixels, max_frames=1, hash_size=hash_size))
    if isinstance(result, DecodeFailure):
        raise DecodeError(result.reason, result.detail, sha256=digests.sha256)
    return ImageHashes(digests.sha256, result.pdq, result.pdq_quality, digests.md5, digests.sha1)


def entry_hashes(data: bytes, *, hash_size: int = 256, max_pixels: int = 64_000_000) -> EntryHashes:
    """The :data:`pipeline.hashlists.Hasher` classify provides: the sha256 of ``data`` and
    the PDQ of its first frame, decoded as the engine decodes it (no PDQ if it does not
    decode). Blocking: call it off the event loop."""
    sha256 = content_hashes(data).sha256
    result = prepare(data, DecodeOptions(max_pixels=max_pixels, max_frames=1, hash_size=hash_size))
    if isinstance(result, DecodeFailure):
        return EntryHashes(sha256)
    return EntryHashes(sha256, result.pdq, result.pdq_quality)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DecodeError(ErrorReason.TOO_LARGE, str(exc)) from None
    except UnidentifiedImageError:
        mime = mediatype.sniff(data)
        if mime in _SUPPORTED_MIMES:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{mime}: header not readable") from None
        raise DecodeError(ErrorReason.UNSUPPORTED_TYPE, mime) from None
    except _PILLOW_ERRORS as exc:
        raise DecodeError(ErrorReason.UNDECODABLE, str(exc)) from None


def sniff(data: bytes) -> str:
    """The media type of ``data`` from its bytes (:func:`pipeline.mediatype.sniff`)."""
    return mediatype.sniff(data)


def _check_jxl_size(data: bytes, max_pixels: int) -> None:
    """Refuse a JPEG XL whose header declares more than ``max_pixels``, before
    pillow-jxl-plugin (which decodes while opening) allocates them."""
    size = jxl_size(data)
    if size is None:
        raise DecodeError(ErrorReason.UNDECODABLE, "image/jxl: header not readable")
    width, height = size
    if width * height > max_pixels:
        raise DecodeError(
            ErrorReason.TOO_LARGE, f"JXL {width}x{height} exceeds {max_pixels} pixels"
        )


def jxl_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG XL SizeHeader (bare codestream or container)."""
    head = _jxl_codestream(data)
    if head is None or not head.startswith(b"\xff\x0a"):
        return None
    bits, at = int.from_bytes(head[2:34], "little"), 0

    def read(n: int) -> int:
        nonlocal at
        value = (bits >> at) & ((1 << n) - 1)
        at += n
        return value

    def u32() -> int:
        return read((9, 13, 18, 30)[read(2)]) + 1

    small = read(1)
    height = (read(5) + 1) * 8 if small else u32()
    ratio = read(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        return height * num // den, height
    return ((read(5) + 1) * 8 if small else u32()), height


def _jxl_codestream(data: bytes) -> bytes | None:
    """The start of the codestream: the file itself, or its first jxlc/jxlp box."""
    if data.startswith(b"\xff\x0a"):
        return data[:64]
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1 and at + 16 <= len(data):
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = len(data) - at
        if kind == b"jxlc":
            return data[at + header : at + header + 64]
        if kind == b"jxlp":  # partial codestream boxes start with a 4-byte sequence number
            return data[at + header + 4 : at + header + 68]
        if size < header:
            return None
        at += size
    return None


def shrink_factor(width: int, height: int, options: DecodeOptions) -> int:
    """The largest integer factor a ``width×height`` image can shrink by and still give
    PDQ and every preprocessor the pixels they need."""
    short_need, long_need = options.hash_size, options.draft_size
    for pre in options.preprocessors:
        if pre.side == "short":
            short_need = max(short_need, pre.size)
        else:
            long_need = max(long_need, pre.size)
    short_side, long_side = min(width, height), max(width, height)
    factor = short_side // max(short_need, 1)
    if long_need > 0:
        factor = min(factor, long_side // long_need)
    return max(1, factor)


@dataclass(slots=True)
class _Sampled:
    images: list[Image.Image]
    where: list[tuple[int, float | None]]  # (frame index, time in seconds) per image
    n_frames: int
    scale: int  # the factor the frames were shrunk by
    duration_s: float | None = None
    limited: str | None = None


def _read_frames(image: Image.Image, orientation: int, options: DecodeOptions) -> _Sampled:
    """The sampled frames, where they are, the frame count and the shrink factor."""
    width, height = image.size
    n_frames = int(getattr(image, "n_frames", 1))
    factor = shrink_factor(width, height, options)
    if n_frames <= 1:
        # libjpeg scales while decoding (DCT scaling): most of the shrink for free.
        jpeg_scale = max((s for s in _JPEG_SCALES if s <= factor), default=1)
        if jpeg_scale > 1 and image.format == "JPEG":
            drafted = image.draft(None, (width // jpeg_scale, height // jpeg_scale))
            jpeg_scale = 1 if drafted is None else round(width / drafted[1][2])
            rest = factor // jpeg_scale
            frame = _finish(image, orientation, rest)
            return _Sampled([frame], [(0, None)], 1, jpeg_scale * rest)
        return _Sampled([_finish(image, orientation, factor)], [(0, None)], 1, factor)
    walkable = max(1, min(n_frames, _FRAME_WALK_FACTOR * options.max_pixels // (width * height)))
    wanted = sample_indices(walkable, options.max_frames)
    stop_at = time.perf_counter() + options.time_limit_s
    sampled = _Sampled([], [], n_frames, factor)
    if image.format == "WEBP":
        # WebP seeks to any frame and reports its start time.
        for index in wanted:
            if sampled.images and time.perf_counter() > stop_at:
                break
            image.seek(index)
            frame = _finish(image, orientation, factor)
            sampled.images.append(frame)
            start_ms = float(image.info.get("timestamp", 0))
            sampled.where.append((index, round(start_ms / 1000, 3)))
            if index == n_frames - 1:
                end_ms = start_ms + float(image.info.get("duration", 0) or 0)
                sampled.duration_s = round(end_ms / 1000, 3)
    else:
        # GIF and APNG seek by stepping through every frame anyway; stepping here adds up
        # the frames' durations on the way.
        elapsed_ms, wanted_set = 0.0, set(wanted)
        for index in range(wanted[-1] + 1):
            if sampled.images and time.perf_counter() > stop_at:
                break
            image.seek(index)
            if index in wanted_set:
                sampled.images.append(_finish(image, orientation, factor))
                sampled.where.append((index, round(elapsed_ms / 1000, 3)))
            elapsed_ms += float(image.info.get("duration", 0) or 0)
        if wanted[-1] == n_frames - 1 and len(sampled.images) == len(wanted):
            sampled.duration_s = round(elapsed_ms / 1000, 3)
    if len(sampled.images) < len(wanted):
        sampled.limited = (
            f"decode time limit ({options.time_limit_s:g} s): "
            f"{len(sampled.images)} of {len(wanted)} planned frames"
        )
    elif walkable < n_frames:
        sampled.limited = f"frames after {walkable} of {n_frames} not sampled (classify.max_pixels)"
    return sampled


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return 1  # broken EXIF is not a reason to refuse the pixels


def _finish(image: Image.Image, orientation: int, factor: int) -> Image.Image:
    """Load, shrink by ``factor``, convert to RGB and undo the EXIF rotation."""
    image.load()
    rgb = to_rgb(image) if factor <= 1 else _shrink_to_rgb(image, factor)
    if orientation in _ORIENTATION:
        rgb = rgb.transpose(_ORIENTATION[orientation])
    return rgb


def _shrink_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(image).reduce(factor)``, a strip at a time.

    Converting first would allocate the full-size RGB (RGBA, for transparency) copies
    that shrinking is meant to avoid; box averaging is linear, so compositing each strip
    on white and then averaging equals averaging premultiplied pixels and compositing.
    """
    width, height = image.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(factor, _STRIP_PIXELS // max(width, 1) // factor * factor)
    value_range = _float_range(image, rows) if image.mode == "F" else None
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        out.paste(to_rgb(strip, value_range).reduce(factor), (0, top // factor))
    return out


def _float_range(image: Image.Image, rows: int) -> tuple[float, float]:
    """Finite min and max of a mode-F image, read a strip at a time."""
    lo, hi = np.inf, -np.inf
    width, height = image.size
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))), np.float32)
        finite = strip[np.isfinite(strip)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def to_rgb(image: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency is composited on white.

    ``value_range`` maps a mode-F image's values to 0…255 (default: its own min…max).
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image, value_range)
    has_alpha = (
        mode in ("RGBA", "LA", "La", "RGBa", "PA")
        or (mode == "P" and "transparency" in image.info)
        or (mode in ("L", "RGB") and "transparency" in image.info)
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(
    image: Image.Image, value_range: tuple[float, float] | None = None
) -> Image.Image:
    array = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        if value_range is None:
            lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        else:
            lo, hi = value_range
        scaled = (array - lo) / (hi - lo or 1.0) * 255.0
    else:
        # 16-bit samples (PNG, TIFF); Pillow's own convert would clip them at 255.
        scaled = np.clip(array, 0, 65535) / 257.0
    gray = np.nan_to_num(scaled).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _axes(method: Image.Transpose) -> tuple[bool, tuple[bool, bool]]:
    """Whether ``method`` swaps width and height, and which displayed axes (x, y) run
    backwards — read off Pillow itself on a labelled 3×2 image."""
    probe = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3))  # value = 3y + x
    out = np.asarray(probe.transpose(method)).astype(int)
    swap = out.shape == (3, 2)
    return swap, (bool(out[0, 1] < out[0, 0]), bool(out[1, 0] < out[0, 0]))


# EXIF orientation → (width and height swapped, displayed axes reversed): the PDQ weights
# must know where each shrunken block landed.
_AXES = {orientation: _axes(method) for orientation, method in _ORIENTATION.items()}


PoolKind = Literal["thread", "process"]


class DecodePool:
    """Runs :func:`prepare` off the event loop, in threads or in worker processes."""

    def __init__(self, workers: int, kind: PoolKind = "thread") -> None:
        self.workers = workers
        self.kind = kind
        self._executor: Executor | None = None

    def start(self) -> None:
        if self._executor is not None:
            return
        if self.kind == "process":
            # forkserver: forking a process that already runs torch/onnxruntime threads
            # can deadlock the child.
            method = (
                "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            )
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context(method)
            )
        else:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            raise RuntimeError("DecodePool used before start()")
        return self._executor

    async def prepare(self, data: bytes, options: DecodeOptions) -> Prepared | DecodeFailure:
        """:func:`prepare` in the pool.

        A decoder that kills its worker process (a native crash on hostile input) breaks
        every call in flight in that pool; the pool is rebuilt and each input retried once,
        so the input that crashes it again ends ``undecodable`` and the others go through.
        """
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            executor = self.executor
            try:
                return await loop.run_in_executor(executor, prepare, data, options)
            except BrokenProcessPool:
                if self._executor is executor:  # the first caller to notice rebuilds it
                    log.error("a decode worker process died; restarting the decode pool")
                    self._executor = None
                    executor.shutdown(wait=False, cancel_futures=True)
                    self.start()
                if attempt:
                    break
        return DecodeFailure(ErrorReason.UNDECODABLE, "the decoder crashed on this input")
