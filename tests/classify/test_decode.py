"""Decoding: every kind of bad input gets the right error reason, good ones decode right."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from classify.decode import DecodeFailure, DecodeOptions, Prepared, prepare
from classify.hashing import pdq_distance, pdq_hash
from classify.preprocess import CenterCrop, Letterbox
from pipeline.events import ErrorReason
from tests import media
from tests.classify import images, pdq_corpus

OPTIONS = DecodeOptions(max_frames=4, preprocessors=(CenterCrop(224), Letterbox(320)))


def ok(data: bytes, options: DecodeOptions = OPTIONS) -> Prepared:
    result = prepare(data, options)
    assert isinstance(result, Prepared), result
    return result


def failure(data: bytes, options: DecodeOptions = OPTIONS) -> DecodeFailure:
    result = prepare(data, options)
    assert isinstance(result, DecodeFailure), result
    return result


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        pytest.param(b"", ErrorReason.EMPTY, "0 bytes", id="empty"),
        pytest.param(
            images.jpeg()[:3000], ErrorReason.UNDECODABLE, "truncated", id="truncated-jpeg"
        ),
        pytest.param(images.jpeg()[:20], ErrorReason.UNDECODABLE, "", id="jpeg-header-only"),
        pytest.param(
            images.png_header_only(100_000, 100_000), ErrorReason.TOO_LARGE, "", id="bomb"
        ),
        pytest.param(images.SVG, ErrorReason.UNSUPPORTED_TYPE, "image/svg+xml", id="svg"),
        pytest.param(images.MP4_HEADER, ErrorReason.UNDECODABLE, "video/mp4", id="mp4-header"),
        pytest.param(images.PDF, ErrorReason.UNSUPPORTED_TYPE, "application/pdf", id="pdf"),
        pytest.param(
            images.zip_archive(), ErrorReason.UNSUPPORTED_TYPE, "application/zip", id="zip"
        ),
        pytest.param(
            images.random_bytes(), ErrorReason.UNSUPPORTED_TYPE, "octet-stream", id="random"
        ),
    ],
)
def test_bad_inputs_get_their_reason(data: bytes, reason: ErrorReason, detail: str) -> None:
    result = failure(data)
    assert result.reason is reason
    assert detail in result.detail


def test_pixel_limit_is_a_setting() -> None:
    data = images.jpeg(size=(640, 480))
    assert failure(data, DecodeOptions(max_pixels=640 * 480 - 1)).reason is ErrorReason.TOO_LARGE
    ok(data, DecodeOptions(max_pixels=640 * 480))


def test_bomb_is_refused_without_allocating_its_pixels() -> None:
    # 100k × 100k RGB would be 30 GB; refusing it must cost next to nothing.
    data = images.png_header_only(100_000, 100_000)
    tracemalloc.start()
    try:
        result = prepare(data, OPTIONS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, DecodeFailure) and result.reason is ErrorReason.TOO_LARGE
    assert peak < 2 * 1024 * 1024


def test_jpeg_decodes_to_model_inputs_with_pdq() -> None:
    result = ok(images.jpeg(size=(1600, 1200)))
    assert (result.format, result.width, result.height, result.n_frames) == ("JPEG", 1600, 1200, 1)
    # libjpeg decodes at 1/4: the short side stays ≥ CLIP's 224, the long side ≥ 320.
    assert result.frame_size == (400, 300)
    clip_input, nudenet_input = result.inputs[0]
    assert clip_input.shape == (224, 224, 3) and clip_input.dtype == np.uint8
    assert nudenet_input.shape == (320, 320, 3)
    assert result.pdq is not None and len(result.pdq) == 64
    assert result.pdq_quality is not None and result.pdq_quality >= 50


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(images.cmyk_jpeg(), id="cmyk-jpeg"),
        pytest.param(images.png16(), id="16-bit-png"),
        pytest.param(images.palette_with_alpha(), id="palette-alpha"),
        pytest.param(images.la_png(), id="la-png"),
    ],
)
def test_unusual_modes_become_rgb(data: bytes) -> None:
    result = ok(data)
    for array in result.inputs[0]:
        assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8


def test_16_bit_png_keeps_its_range() -> None:
    # Pillow's own convert clips 16-bit samples at 255 (an all-white image); ours scales.
    clip_input = ok(images.png16()).inputs[0][0]  # the centre of a 0..65535 ramp
    assert clip_input.min() < 80 and clip_input.max() > 170


def test_transparent_pixels_are_composited_on_white() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    clip_input = ok(images.encode(image, "PNG")).inputs[0][0]
    assert clip_input.min() == 255


def test_exif_orientation_is_applied() -> None:
    result = ok(images.exif_rotated(6))
    assert (result.width, result.height) == (400, 200)  # as stored
    assert result.frame_size == (200, 400)  # as displayed


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_upright_image(orientation: int) -> None:
    upright = media.photo_jpeg(31, 1000, 700)
    data = pdq_corpus._with_orientation(upright, orientation) if orientation > 1 else upright
    options = DecodeOptions(max_frames=1, preprocessors=(Letterbox(64),))
    result = ok(data, options)
    expected = ok(upright, options)
    assert result.frame_size[0] > result.frame_size[1]  # landscape, as displayed
    difference = np.abs(result.inputs[0][0].astype(int) - expected.inputs[0][0].astype(int))
    assert difference.mean() < 4  # the same picture, not a rotated or mirrored one
    assert result.pdq is not None
    assert pdq_distance(result.pdq, pdq_corpus.reference_pdq(data)) <= 10


def test_frames_are_only_as_large_as_their_users_need() -> None:
    data = media.photo_jpeg(1, 800, 600)
    assert ok(data, DecodeOptions(max_frames=1)).frame_size == (400, 300)  # PDQ: ≥ 256
    assert ok(data, DecodeOptions(max_frames=1, hash_size=128)).frame_size == (200, 150)
    models = DecodeOptions(hash_size=128, preprocessors=(CenterCrop(224), Letterbox(320)))
    assert ok(data, models).frame_size == (400, 300)
    big = media.photo_jpeg(2, 4000, 3000)
    assert ok(big, DecodeOptions(max_frames=1)).frame_size == (500, 375)  # 1/8 is enough
    png = images.encode(media.photo_image(2, 1000, 700), "PNG")
    assert ok(png, DecodeOptions(max_frames=1, hash_size=128)).frame_size == (200, 140)
    small = images.jpeg(size=(160, 120))
    assert ok(small, OPTIONS).frame_size == (160, 120)  # never enlarged


def test_animation_pdq_is_the_first_frames() -> None:
    frames = [media.photo_image(50 + i, 320, 240) for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=40)
    result = ok(out.getvalue())
    assert result.n_frames == 4 and len(result.inputs) == 4
    first = pdq_hash(np.asarray(frames[0]))[0]
    assert result.pdq is not None and pdq_distance(result.pdq, first) <= 10
    assert all(pdq_distance(result.pdq, pdq_hash(np.asarray(f))[0]) > 31 for f in frames[1:])


# VmHWM, not ru_maxrss: the latter is inherited from the (big) pytest process.
_PEAK_MEMORY = """
import re, sys
from classify.decode import DecodeOptions, Prepared, prepare
def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1])
data = open(sys.argv[1], "rb").read()
before = kib("VmRSS")
result = prepare(data, DecodeOptions(max_frames=1))
assert isinstance(result, Prepared), result
print(result.frame_size, (kib("VmHWM") - before) // 1024)
"""


def test_a_64_megapixel_image_never_exists_as_full_size_rgba(tmp_path: Path) -> None:
    """An 8000×8000 palette PNG with transparency: 64 MB as decoded; its RGBA copy
    would be 256 MB (and compositing on white made three of them)."""
    image = Image.new("P", (8000, 8000), 0)
    image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
    draw = ImageDraw.Draw(image)
    draw.ellipse((1000, 1000, 7000, 6000), fill=1)
    draw.rectangle((3000, 500, 5000, 7500), fill=2)
    path = tmp_path / "big.png"
    image.save(path, "PNG", transparency=0)
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    size, grew_mib = run.stdout.split(")")[0] + ")", int(run.stdout.split(")")[1])
    assert size == "(259, 259)"  # 8000 // 256 = 31: shrunk by 31, in strips
    assert grew_mib < 160  # the 64 MB palette image and strips, no 256 MB RGBA


def test_long_gif_is_sampled_to_max_frames_quickly() -> None:
    data = images.gif_frames(300)
    started = time.perf_counter()
    result = ok(data)
    assert time.perf_counter() - started < 10
    assert result.n_frames == 300
    assert len(result.inputs) == 4
    # Evenly spread: the sampled frames differ from each other.
    colours = {tuple(frame[0][0, 0]) for frame in result.inputs}
    assert len(colours) == 4


@pytest.mark.parametrize(
    ("data", "frames"),
    [
        pytest.param(images.animated_webp(6), 6, id="webp"),
        pytest.param(images.apng(5), 5, id="apng"),
    ],
)
def test_animations_are_sampled(data: bytes, frames: int) -> None:
    result = ok(data, DecodeOptions(max_frames=3, preprocessors=(CenterCrop(32),)))
    assert result.n_frames == frames
    assert len(result.inputs) == 3


def test_first_frame_only_when_max_frames_is_one() -> None:
    result = ok(images.gif_frames(10), DecodeOptions(max_frames=1, preprocessors=(CenterCrop(32),)))
    assert len(result.inputs) == 1


@pytest.mark.parametrize("tail", [b"\x00" * 40, bytes(range(256))])
def test_a_broken_jpeg_xl_codestream_is_undecodable_not_a_crash(tail: bytes) -> None:
    # libjxl raises RuntimeError("Generic Error") through the Pillow plugin (found by the
    # arbitrary-bytes property below).
    result = prepare(b"\xff\x0a" + tail, OPTIONS)
    assert isinstance(result, DecodeFailure)
    assert result.reason is ErrorReason.UNDECODABLE


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert isinstance(prepare(data, OPTIONS), Prepared | DecodeFailure)


_JPEG = images.jpeg(9, size=(160, 120))
_PNG = images.encode(images.scene(9, (160, 120)), "PNG")
_GIF = images.gif_frames(6, (40, 30))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([_JPEG, _PNG, _GIF]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_corrupted_images_never_raise(original: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(original)
    for position, value in edits:
        data[position % len(data)] = value
    result = prepare(bytes(data), OPTIONS)
    if isinstance(result, DecodeFailure):
        assert result.reason in (
            ErrorReason.UNDECODABLE,
            ErrorReason.UNSUPPORTED_TYPE,
            ErrorReason.TOO_LARGE,
        )
