"""Decoding: every kind of bad input gets the right error reason, good ones decode right."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from classify.decode import DecodeFailure, DecodeOptions, Prepared, prepare
from classify.preprocess import CenterCrop, Letterbox
from pipeline.events import ErrorReason
from tests.classify import images

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
        pytest.param(images.MP4_HEADER, ErrorReason.UNSUPPORTED_TYPE, "video/mp4", id="mp4"),
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
    assert max(result.frame_size) == 512  # draft + shrink to the hash box
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
