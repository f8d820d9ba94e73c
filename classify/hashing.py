"""Content hashes: sha256 of the bytes and Meta's PDQ perceptual hash of the pixels.

PDQ hashes are written as 64 lowercase hex digits, the bits in the order ``pdqhash``
returns them read as one big-endian binary number — the convention of
python-threatexchange, so lists exported from ThreatExchange or HMA import as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pdqhash

PDQ_BITS = 256
PDQ_BYTES = PDQ_BITS // 8


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """The hashes of one image file."""

    sha256: str
    pdq: str | None
    pdq_quality: int | None


def sha256_hex(data: bytes) -> str:
    """sha256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def pdq_hash(rgb: np.ndarray) -> tuple[str, int]:
    """PDQ hash (hex) and quality (0–100) of an ``H×W×3`` uint8 RGB array."""
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return pdq_bits_to_hex(bits), int(quality)


def pdq_bits_to_hex(bits: np.ndarray) -> str:
    """256 0/1 values → 64 hex digits (first bit is the most significant)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq_to_bytes(pdq_hex: str) -> np.ndarray:
    """PDQ hex → 32 uint8 codes, the layout faiss binary indexes take."""
    return np.frombuffer(bytes.fromhex(pdq_hex), dtype=np.uint8)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance between two PDQ hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hash_file(path: Path, *, hash_size: int = 512, max_pixels: int = 64_000_000) -> ImageHashes:
    """sha256 and PDQ of an image file, decoded the way the engine decodes it.

    Raises :class:`classify.decode.DecodeError` when the file is not a decodable image;
    the sha256 alone is still useful then and is part of the error.
    """
    from classify.decode import DecodeError, DecodeFailure, DecodeOptions, prepare

    data = path.read_bytes()
    result = prepare(data, DecodeOptions(max_pixels=max_pixels, max_frames=1, hash_size=hash_size))
    if isinstance(result, DecodeFailure):
        raise DecodeError(result.reason, result.detail, sha256=sha256_hex(data))
    return ImageHashes(sha256_hex(data), result.pdq, result.pdq_quality)
