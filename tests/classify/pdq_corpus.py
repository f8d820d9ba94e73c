"""PDQ interoperability: pictguard's PDQ against the reference on generated images.

Shared by ``tests/classify/test_pdq_interop.py`` (~60 images) and
``bench/classify.py --pdq-interop`` (1,000). The reference is ``pdqhash`` (Meta's C++)
on every pixel of the decoded, EXIF-upright image — what ThreatExchange/HMA compute;
pictguard's is :func:`classify.decode.prepare` with the engine's hash-only options.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from classify.decode import DecodeOptions, Prepared, prepare
from classify.hashing import pdq_distance, pdq_hash
from tests import media

HASH_OPTIONS = DecodeOptions(max_frames=1)
MATCH_RADIUS = 31
# Sizes as uploads come: landscape and portrait phone shots shrunk for the web, odd sizes
# (JPEG blocks cut short), a square avatar, a big original.
SIZES = (
    (800, 600),
    (1280, 960),
    (640, 480),
    (720, 1280),
    (1024, 768),
    (801, 601),
    (500, 500),
    (1600, 1200),
    (333, 999),
    (2048, 1536),
)
KINDS = ("photo", "photo-exif", "screenshot", "crop", "reencode", "webp")


@dataclass(frozen=True, slots=True)
class Sample:
    kind: str
    data: bytes


def reference_pdq(data: bytes) -> str:
    """The reference PDQ: every pixel of the decoded image, EXIF orientation applied."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return pdq_hash(np.asarray(upright))[0]


def pictguard_pdq(data: bytes, options: DecodeOptions = HASH_OPTIONS) -> str:
    result = prepare(data, options)
    assert isinstance(result, Prepared), result
    assert result.pdq is not None
    return result.pdq


def _with_orientation(data: bytes, orientation: int) -> bytes:
    """The same JPEG pixels stored sideways, with the EXIF tag that makes them upright."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = image.convert("RGB")
    stored = pixels.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


# The transpose that, undone by EXIF ``orientation``, gives back the upright image.
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def corpus(n: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> Iterator[Sample]:
    """``n`` generated images, the kinds and sizes in turn."""
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        width, height = sizes[(i // len(KINDS) + i) % len(sizes)]
        item = seed * 100_000 + i
        if kind == "photo":
            data = media.photo_jpeg(item, width, height)
        elif kind == "photo-exif":
            data = _with_orientation(media.photo_jpeg(item, width, height), 2 + i % 7)
        elif kind == "screenshot":
            data = media.screenshot_png(item, width, height)
        elif kind == "crop":
            # 1–2 % per side: beyond that PDQ itself stops matching (see media.cropped)
            data = media.cropped(media.photo_jpeg(item, width, height), 0.01 + (i % 3) * 0.005)
        elif kind == "reencode":
            data = media.near_duplicates(media.photo_jpeg(item, width, height), item)["jpeg_q50"]
        else:
            data = media.webp_image(item, width, height)
        yield Sample(kind, data)


def interop_distances(samples: list[Sample]) -> np.ndarray:
    """Hamming distance between pictguard's PDQ and the reference, per sample."""
    return np.array([pdq_distance(pictguard_pdq(s.data), reference_pdq(s.data)) for s in samples])


@dataclass(frozen=True, slots=True)
class Recall:
    """Near-duplicate pairs matched at radius 31, by whose hashes."""

    pairs: int
    reference: int  # reference(original) vs reference(copy)
    pictguard: int  # pictguard(original) vs pictguard(copy)
    mixed: int  # reference(original) — a list from elsewhere — vs pictguard(copy)
    lost: tuple[str, ...]  # pairs the reference matches and pictguard (either way) does not


def near_duplicate_recall(
    originals: list[bytes], seed: int = 0, options: tuple[DecodeOptions, ...] = (HASH_OPTIONS,)
) -> list[Recall]:
    """Match every near-duplicate copy (tests/media.py: resized, re-encoded, PNG, WebP,
    cropped ≤ 1 %, brighter, darker) of each original
    against it, with the reference hashes and with pictguard's (one result per
    ``options``)."""
    pairs = reference = 0
    pictguard = [0] * len(options)
    mixed = [0] * len(options)
    lost: list[list[str]] = [[] for _ in options]
    for number, original in enumerate(originals):
        ref_original = reference_pdq(original)
        pg_originals = [pictguard_pdq(original, o) for o in options]
        for name, copy in media.near_duplicates(original, seed * 1000 + number).items():
            pairs += 1
            ref_match = pdq_distance(ref_original, reference_pdq(copy)) <= MATCH_RADIUS
            reference += ref_match
            for i, (pg_original, option) in enumerate(zip(pg_originals, options, strict=True)):
                pg_copy = pictguard_pdq(copy, option)
                pg_match = pdq_distance(pg_original, pg_copy) <= MATCH_RADIUS
                mixed_match = pdq_distance(ref_original, pg_copy) <= MATCH_RADIUS
                pictguard[i] += pg_match
                mixed[i] += mixed_match
                if ref_match and not (pg_match and mixed_match):
                    lost[i].append(f"{number}:{name}")
    return [
        Recall(pairs, reference, pictguard[i], mixed[i], tuple(lost[i]))
        for i in range(len(options))
    ]


def near_duplicate_hashes(originals: list[bytes], seed: int = 0) -> list[tuple[str, list[str]]]:
    """(pictguard PDQ of each original, pictguard PDQs of its near-duplicate copies)."""
    return [
        (
            pictguard_pdq(original),
            [
                pictguard_pdq(copy)
                for copy in media.near_duplicates(original, seed * 1000 + n).values()
            ],
        )
        for n, original in enumerate(originals)
    ]
