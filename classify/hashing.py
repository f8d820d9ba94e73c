"""Content hashes of the bytes (sha256, MD5, SHA-1) and Meta's PDQ perceptual hash.

PDQ hashes are written as 64 lowercase hex digits, the bits in the order ``pdqhash``
returns them read as one big-endian binary number — the convention of
python-threatexchange, so lists exported from ThreatExchange or HMA import as they are.

This module knows nothing about decoding: :mod:`classify.decode` turns bytes into frames
and calls :func:`pdq_from_frame`; ``hash_file`` lives there too.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import pdqhash

PDQ_BITS = 256
PDQ_BYTES = PDQ_BITS // 8
# Bytes handed to the three digests at a time: small enough to stay in L2 cache between
# them, so the data is read from memory once whatever the number of digests.
_CHUNK = 64 * 1024
# PDQ works on a 64×64 luminance grid; the reference refuses (all-zero hash, quality 0)
# images with a side below this.
_PDQ_GRID = 64
_PDQ_MIN_SIDE = 5
_EMPTY_PDQ = "0" * 64


@dataclass(frozen=True, slots=True)
class ContentHashes:
    """Digests of the bytes: sha256 (pictguard's key) and the MD5/SHA-1 that NCMEC and
    industry hash lists carry."""

    sha256: str
    md5: str
    sha1: str


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """The hashes of one image file."""

    sha256: str
    pdq: str | None
    pdq_quality: int | None
    md5: str
    sha1: str


def sha256_hex(data: bytes) -> str:
    """sha256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def content_hashes(data: bytes) -> ContentHashes:
    """sha256, MD5 and SHA-1 of ``data`` in one pass over the bytes.

    Each chunk is fed to the three digests while it is still in cache; hashlib releases
    the GIL for chunks this size, so a thread runs this in parallel with the event loop.
    Measured: ~0.2 ms for 100 KB, about sha256 + MD5 + SHA-1 run one after the other.
    """
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        chunk = view[start : start + _CHUNK]
        sha256.update(chunk)
        md5.update(chunk)
        sha1.update(chunk)
    return ContentHashes(sha256.hexdigest(), md5.hexdigest(), sha1.hexdigest())


def pdq_hash(rgb: np.ndarray) -> tuple[str, int]:
    """PDQ hash (hex) and quality (0–100) of an ``H×W×3`` uint8 RGB array.

    The reference algorithm on every pixel: what ThreatExchange/HMA compute. It costs
    about 2.5 ms on a 512-px frame and 8 ms on 800 px; :func:`pdq_from_frame` gives the
    same hash from a shrunken frame for a fraction of that.
    """
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return pdq_bits_to_hex(bits), int(quality)


def pdq_from_frame(
    luma: np.ndarray,
    full_size: tuple[int, int],
    *,
    scale: int | None = None,
    reversed_axes: tuple[bool, bool] = (False, False),
) -> tuple[str, int]:
    """PDQ of an image of ``full_size`` (width, height) from a shrunken luminance frame.

    The reference hashes an image by blurring its luminance with two box filters per axis
    (windows of ``ceil(side / 128)`` pixels), sampling a 64×64 grid from that, and taking
    a DCT of the grid. Every step up to the grid is linear, so the grid equals a weight
    matrix per axis applied to the pixels; summing those weights over the blocks of
    original pixels that each frame pixel averages gives the same grid from the small
    frame (up to what the shrinking itself loses). The grid then goes through
    ``pdqhash`` — Meta's C++ — for the DCT, the bits and the quality score.

    ``luma`` is ``h×w`` (float or uint8, ITU-R 601 luma as Pillow's ``L`` mode). With
    ``scale`` each frame pixel stands for a ``scale×scale`` block of the original (JPEG
    DCT scaling, ``Image.reduce``), the blocks at the right and bottom edges cut short;
    without it the frame is taken as a proportional resize (``ceil(side / scale)`` frame
    pixels per side is still recognised as an integer reduction).
    ``reversed_axes`` (x, y) says which axes of the frame run backwards relative to how
    the blocks were cut (the frame was flipped or rotated after shrinking): the short
    last block then sits first.

    How close to the reference depends on the frame: with a short side ≥ 256 px, 1,000
    generated photos, screenshots, crops and re-encodes hash within 6 bits of the
    reference on every pixel, ≥ 128 px within 12 (``classify.decode.DecodeOptions`` has
    the table; ``bench/classify.py --pdq-interop`` measures it). A frame the size of the
    image gives the reference's hash up to rounding the grid to 8 bits.
    """
    width, height = full_size
    if width < _PDQ_MIN_SIDE or height < _PDQ_MIN_SIDE:
        return _EMPTY_PDQ, 0  # what the reference answers for such images
    frame_h, frame_w = luma.shape
    row_taps, row_weights = _frame_taps(
        height, frame_h, scale or -(-height // frame_h), reversed_axes[1]
    )
    col_taps, col_weights = _frame_taps(
        width, frame_w, scale or -(-width // frame_w), reversed_axes[0]
    )
    # Each grid cell reads a few frame pixels per axis: gathers and sums, not a matrix
    # product (BLAS would wake its thread pool for this and burn a second core).
    pixels = np.asarray(luma, dtype=np.float32)
    across = np.einsum("itw,it->iw", pixels[row_taps], row_weights)
    grid = np.einsum("jit,it->ji", across[:, col_taps], col_weights)
    grey = np.clip(np.rint(grid), 0, 255).astype(np.uint8)
    # A 64×64 input skips the reference's own blur: it hashes the grid as it is. Equal
    # R, G and B make its luma the grid itself.
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)))
    return pdq_bits_to_hex(bits), int(quality)


@functools.lru_cache(maxsize=256)
def _frame_taps(full: int, frame: int, scale: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_frame_weights` as taps: grid row ``i`` is ``Σ_t weights[i, t] ·
    frame[taps[i, t]]`` (``64×t`` each, ``t`` a few pixels)."""
    dense = _frame_weights(full, frame, scale, reverse)
    nonzero = dense != 0
    first = np.argmax(nonzero, axis=1)
    last = frame - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    taps = first[:, None] + np.arange(int((last - first).max()) + 1)
    inside = taps < frame
    taps = np.minimum(taps, frame - 1)
    weights = np.where(inside, np.take_along_axis(dense, taps, axis=1), 0.0).astype(np.float32)
    taps.flags.writeable = weights.flags.writeable = False  # cached: shared by every caller
    return taps, weights


def _frame_weights(full: int, frame: int, scale: int, reverse: bool) -> np.ndarray:
    """``64×frame`` weights: the reference's blur and sampling along one axis of ``full``
    pixels, summed over the original pixels each of the ``frame`` pixels stands for."""
    rows, first, weights = _reference_taps(full)
    if scale >= 1 and -(-full // scale) == frame:
        # An integer reduction (JPEG scaling, Image.reduce): pixel b averages s·b…s·b+s-1,
        # the last block cut short by the image's edge.
        edges = np.minimum(np.arange(frame + 1) * scale, full)
    else:
        edges = np.rint(np.arange(frame + 1) * (full / frame)).astype(np.int64)
    if reverse:
        edges = full - edges[::-1]
    pixels = np.minimum(first[:, None] + np.arange(weights.shape[1]), full - 1)
    blocks = np.searchsorted(edges, pixels, side="right") - 1
    flat = (rows[:, None] * frame + blocks).ravel()
    return np.bincount(flat, weights.ravel(), _PDQ_GRID * frame).reshape(_PDQ_GRID, frame)


@functools.lru_cache(maxsize=64)
def _reference_taps(full: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's Jarosz blur then decimation along one axis, as taps: grid row
    ``i`` is ``Σ_t weights[i, t] · pixel[first[i] + t]``.

    Mirrors ``pdq/cpp/downscaling`` (``box1DFloat``, ``decimateFloat``): a box of
    ``window`` pixels that shrinks at the image's edges (even windows reach one pixel
    further right than left), run twice, then the pixel at ``int((i + 0.5) * full / 64)``.
    Only the ~2·window pixels around each sample get a weight, so this is cheap for any
    image size. Taps past the edge carry zero weight.
    """
    window = (full + 2 * _PDQ_GRID - 1) // (2 * _PDQ_GRID)
    half = (window + 2) // 2
    index = np.arange(full)
    lo = np.maximum(index - (window - half), 0)
    hi = np.minimum(index + half - 1, full - 1)
    count = (hi - lo + 1).astype(np.float64)
    samples = ((np.arange(_PDQ_GRID) + 0.5) * full / _PDQ_GRID).astype(np.int64)
    # First pass, read at the samples: pixels lo..hi around each sample, 1/count each.
    taps = lo[samples][:, None] + np.arange(window)
    inside = taps <= hi[samples][:, None]
    taps = np.minimum(taps, full - 1)
    # Second pass: each of those pixels spreads its share evenly over its own lo..hi.
    share = np.where(inside, 1.0 / (count[samples][:, None] * count[taps]), 0.0)
    first = lo[lo[samples]]
    span = 2 * window + 1
    rows = np.arange(_PDQ_GRID)
    base = (rows * (span + 1))[:, None]
    size = _PDQ_GRID * (span + 1)
    diff = np.bincount((base + lo[taps] - first[:, None]).ravel(), share.ravel(), size)
    diff -= np.bincount((base + hi[taps] + 1 - first[:, None]).ravel(), share.ravel(), size)
    weights = np.cumsum(diff.reshape(_PDQ_GRID, span + 1), axis=1)[:, :span]
    weights[first[:, None] + np.arange(span) >= full] = 0.0
    return rows, first, weights


def pdq_bits_to_hex(bits: np.ndarray) -> str:
    """256 0/1 values → 64 hex digits (first bit is the most significant)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq_to_bytes(pdq_hex: str) -> np.ndarray:
    """PDQ hex → 32 uint8 codes, the layout faiss binary indexes take."""
    return np.frombuffer(bytes.fromhex(pdq_hex), dtype=np.uint8)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance between two PDQ hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
