"""Image decoding: bytes → a few RGB frames, their PDQ hash and the models' inputs.

Everything here is synchronous and CPU-bound; :class:`DecodePool` runs it in threads or
processes so the event loop never decodes. Nothing raises for bad input: :func:`prepare`
returns a :class:`DecodeFailure` carrying the error reason the verdict will show.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import struct
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Literal

import filetype
import numpy as np
from PIL import Image, UnidentifiedImageError

from classify.hashing import pdq_hash
from classify.preprocess import Preprocessor
from pipeline.errors import PictguardError
from pipeline.events import ErrorReason

log = logging.getLogger(__name__)

# Only plain raster formats. Pillow can open many more (EPS runs Ghostscript, FITS, PSD,
# …); a media store has no business with them and each is attack surface.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "ICO")
_SUPPORTED_MIMES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/x-icon",
        "image/apng",
    }
)
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
)

# pictguard enforces its own pixel limit (``max_pixels``) before any pixel is decoded;
# Pillow's warning between its own two limits would only be noise in the logs.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class DecodeError(PictguardError):
    """An input cannot be turned into pixels; ``reason`` is the verdict's error reason."""

    def __init__(self, reason: ErrorReason, detail: str, *, sha256: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.sha256 = sha256


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What to decode and which model inputs to produce (picklable for process pools)."""

    max_pixels: int = 64_000_000
    max_frames: int = 4
    hash_size: int = 512
    # JPEG draft target: libjpeg decodes at 1/2…1/8 scale while both sides stay ≥ this,
    # enough for the models' inputs (224–336 px) and for PDQ, which works at 64×64.
    draft_size: int = 320
    preprocessors: tuple[Preprocessor, ...] = ()


@dataclass(slots=True)
class Prepared:
    """A decoded image: its PDQ (of the first frame) and per-frame model inputs."""

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


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why an input could not be decoded."""

    reason: ErrorReason
    detail: str


def prepare(data: bytes, options: DecodeOptions) -> Prepared | DecodeFailure:
    """Decode ``data``, hash its first frame with PDQ and run the preprocessors.

    Never raises for bad input; a bug (or MemoryError) still propagates.
    """
    import time

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
        try:
            frames, n_frames = _read_frames(image, options)
        except DecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise DecodeError(ErrorReason.TOO_LARGE, f"{fmt}: {exc}") from None
        except _PILLOW_ERRORS as exc:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{fmt}: {exc}") from None
    pdq, quality = pdq_hash(np.asarray(frames[0], dtype=np.uint8))
    inputs = [tuple(pre(frame) for pre in options.preprocessors) for frame in frames]
    return Prepared(fmt, width, height, n_frames, pdq, quality, frames[0].size, inputs)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DecodeError(ErrorReason.TOO_LARGE, str(exc)) from None
    except UnidentifiedImageError:
        mime = sniff(data)
        if mime in _SUPPORTED_MIMES:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{mime}: header not readable") from None
        raise DecodeError(ErrorReason.UNSUPPORTED_TYPE, mime) from None
    except _PILLOW_ERRORS as exc:
        raise DecodeError(ErrorReason.UNDECODABLE, str(exc)) from None


def sniff(data: bytes) -> str:
    """Best guess of the media type of something Pillow does not open."""
    kind = filetype.guess(data[:8192])
    if kind is not None:
        return str(kind.mime)
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head or (head.startswith(b"<?xml") and b"<svg" in data[:8192].lower()):
        return "image/svg+xml"
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return "application/octet-stream"


def _read_frames(image: Image.Image, options: DecodeOptions) -> tuple[list[Image.Image], int]:
    width, height = image.size
    n_frames = int(getattr(image, "n_frames", 1))
    orientation = _orientation(image)
    if n_frames <= 1:
        image.draft(None, (options.draft_size, options.draft_size))
        return [_finish(image, orientation, options.hash_size)], 1
    walkable = max(1, min(n_frames, _FRAME_WALK_FACTOR * options.max_pixels // (width * height)))
    frames = []
    for index in _sample(walkable, options.max_frames):
        image.seek(index)
        frames.append(_finish(image, orientation, options.hash_size))
    return frames, n_frames


def _sample(n: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``range(n)``, first frame included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return 1  # broken EXIF is not a reason to refuse the pixels


def _finish(image: Image.Image, orientation: int, box: int) -> Image.Image:
    """Load, convert to RGB, undo EXIF rotation and shrink to fit ``box``."""
    image.load()
    rgb = to_rgb(image)
    if orientation in _ORIENTATION:
        rgb = rgb.transpose(_ORIENTATION[orientation])
    if max(rgb.size) > box:
        rgb.thumbnail((box, box), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency is composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
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


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - lo) / (hi - lo or 1.0) * 255.0
    else:
        # 16-bit samples (PNG, TIFF); Pillow's own convert would clip them at 255.
        scaled = np.clip(array, 0, 65535) / 257.0
    gray = np.nan_to_num(scaled).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


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
