"""Content hashes equal hashlib's; PDQ from a shrunken frame equals the reference's."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classify.decode import DecodeError, hash_file
from classify.hashing import content_hashes, pdq_distance, pdq_from_frame, pdq_hash
from tests import media
from tests.classify import images

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1_000_003])
def test_content_hashes_equal_hashlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    digests = content_hashes(data)
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert digests.md5 == hashlib.md5(data).hexdigest()
    assert digests.sha1 == hashlib.sha1(data).hexdigest()


def test_hash_file_gives_every_hash(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(media.photo_jpeg(3, 800, 600))
    data = path.read_bytes()
    hashes = hash_file(path)
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()
    assert (hashes.md5, hashes.sha1) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
    )
    assert hashes.pdq is not None and hashes.pdq_quality == 100
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DecodeError) as caught:
        hash_file(bad)
    assert caught.value.sha256 == hashlib.sha256(b"not an image").hexdigest()


def test_hashing_does_not_import_decode() -> None:
    """No import loop: hashing is the lower layer, decode builds on it."""
    code = (
        "import sys, classify.hashing; assert 'classify.decode' not in sys.modules; "
        "import classify.decode, classify.hashlists"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_64_pixel_frame_is_hashed_exactly_as_the_reference() -> None:
    """At 64×64 the reference skips its blur: the frame is the grid, bit for bit."""
    gray = np.asarray(images.scene(8, (64, 64)).convert("L"))
    expected = pdq_hash(np.repeat(gray[:, :, None], 3, axis=2))
    assert pdq_from_frame(gray, (64, 64)) == expected


def test_full_frames_hash_as_the_reference() -> None:
    """No shrinking: the reference's own blur and sampling, rounded to 8 bits once."""
    for seed in range(6):
        image = media.photo_image(seed, 300 + 37 * seed, 200 + 23 * seed)
        reference, quality = pdq_hash(np.asarray(image))
        mine, my_quality = pdq_from_frame(np.asarray(image.convert("L")), image.size)
        assert pdq_distance(mine, reference) <= 4
        assert abs(my_quality - quality) <= 2


def test_shrunken_frames_hash_close_to_the_reference() -> None:
    for seed in range(6):
        image = media.photo_image(seed, 1001 + 40 * seed, 751)
        reference, _ = pdq_hash(np.asarray(image))
        for factor in (2, 3, 5):
            frame = image.reduce(factor).convert("L")
            mine, _ = pdq_from_frame(np.asarray(frame), image.size, scale=factor)
            assert pdq_distance(mine, reference) <= 10, (seed, factor)
        # Any other resize: weights proportional to the frame's share of the image.
        resized = image.resize((333, 250), Image.Resampling.BOX).convert("L")
        assert pdq_distance(pdq_from_frame(np.asarray(resized), image.size)[0], reference) <= 10


def test_tiny_images_get_the_references_empty_hash() -> None:
    assert pdq_from_frame(np.zeros((4, 100), np.uint8), (100, 4)) == ("0" * 64, 0)
