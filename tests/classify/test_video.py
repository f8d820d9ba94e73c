"""Video, animations and the still formats pict-rs keeps, through the decoder and the engine.

Every file is generated (tests/media.py): real H.264/HEVC/VP9 video in MP4, MOV, WebM and
MKV, GIF/APNG/WebP animations, JPEG XL, AVIF and HEIC. The colour test classifier flags
a frame by its colour (magenta: CSAM, red: nsfw), so "one frame flags the video" is
testable without any objectionable content.
"""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import av
import pytest
from PIL import Image, ImageOps

from classify.base import ClassifyTables
from classify.decode import (
    DecodeFailure,
    DecodeOptions,
    Prepared,
    VideoLimits,
    hash_file,
    prepare,
)
from classify.hashing import sha256_hex
from classify.hashlists import HashLists
from classify.preprocess import CenterCrop
from pipeline.events import Decision, ErrorReason, utcnow
from tests import media
from tests.classify.helpers import EngineFactory
from tests.colour_model import ColourModel  # noqa: F401 — registers the "colour" classifier
from tests.reliability.hostile import jxl_huge_dimensions

MAGENTA = Image.new("RGB", (64, 48), (250, 0, 250))  # the colour model's CSAM
OPTIONS = DecodeOptions(max_frames=8, preprocessors=(CenterCrop(32),))


def ok(data: bytes, options: DecodeOptions = OPTIONS) -> Prepared:
    result = prepare(data, options)
    assert isinstance(result, Prepared), result
    return result


def failure(data: bytes, options: DecodeOptions = OPTIONS) -> DecodeFailure:
    result = prepare(data, options)
    assert isinstance(result, DecodeFailure), result
    return result


# -- the decoder -------------------------------------------------------------------------


@pytest.mark.parametrize("container", media.VIDEO_CONTAINERS)
def test_each_container_is_sampled_at_its_keyframes_and_evenly(
    container: media.VideoContainer,
) -> None:
    data = media.video(1, 320, 240, seconds=3.0, fps=10, container=container, keyframe_interval=10)
    result = ok(data)
    assert result.media_type == media.CONTENT_TYPES[container]
    assert (result.width, result.height, result.n_frames) == (320, 240, 30)
    indices = [frame.index for frame in result.frames]
    assert len(indices) == 8 and indices == sorted(set(indices))
    assert {0, 10, 20} <= set(indices)  # every keyframe
    assert indices[-1] == 29  # and the spread reaches the end
    assert [f.keyframe for f in result.frames] == [i in (0, 10, 20) for i in indices]
    for frame in result.frames:
        assert frame.time_s == pytest.approx(frame.index / 10, abs=0.002)
        assert frame.pdq is not None and frame.pdq_quality is not None
    assert len(result.inputs) == 8 and result.inputs[0][0].shape == (32, 32, 3)
    assert result.duration_s == pytest.approx(3.0, abs=0.15)
    assert result.limited is None


@pytest.mark.parametrize("container", media.VIDEO_CONTAINERS)
def test_sampled_frames_are_the_frames_a_full_decode_gives(
    container: media.VideoContainer,
) -> None:
    """Frames decoded from their keyframe with the unreferenced ones skipped are the same
    pictures a player shows."""
    data = media.video(3, 320, 240, 6.0, 10, container, keyframe_interval=60)
    result = ok(data, DecodeOptions(max_frames=4))
    with av.open(io.BytesIO(data)) as player:
        shown = [frame.to_image() for frame in player.decode(video=0)]
    assert len(shown) == 60 and [f.index for f in result.frames] == [0, 20, 39, 59]
    for frame in result.frames:
        reference, _ = media.pdq_hash(shown[frame.index])
        assert frame.pdq is not None and media.pdq_distance(frame.pdq, reference) <= 8


@pytest.mark.parametrize("kind", ["gif", "apng", "webp"])
def test_animations_report_frame_indices_and_times(kind: str) -> None:
    make = {"gif": media.animated_gif, "apng": media.animated_png, "webp": media.animated_webp}
    data = make[kind](2, 160, 120, 12, 50)
    result = ok(data)
    assert result.n_frames == 12 and len(result.frames) == 8
    assert [(f.index, f.time_s) for f in result.frames][:2] == [(0, 0.0), (2, 0.1)]
    assert result.frames[-1].index == 11 and result.duration_s == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        pytest.param(media.jxl_image, "JXL", id="jxl"),
        pytest.param(media.avif_image, "AVIF", id="avif"),
        pytest.param(media.heic_image, "HEIF", id="heic"),
    ],
)
def test_still_formats_pict_rs_keeps_decode(make: object, fmt: str) -> None:
    data = make(3, 640, 480)  # type: ignore[operator]
    result = ok(data)
    assert (result.format, result.width, result.height, result.n_frames) == (fmt, 640, 480, 1)
    reference, _ = media.pdq_hash(data)
    assert result.pdq is not None
    assert media.pdq_distance(result.pdq, reference) <= 8


def test_a_jxl_declaring_huge_dimensions_is_refused_before_decoding() -> None:
    result = failure(jxl_huge_dimensions())
    assert result.reason is ErrorReason.TOO_LARGE and "60000x60000" in result.detail


def test_the_type_comes_from_the_bytes() -> None:
    cases = {item.name: item for item in media.mislabelled(4)}
    png_as_video = ok(cases["clip.mp4"].data)
    assert (png_as_video.media_type, png_as_video.n_frames) == ("image/png", 1)
    video_as_jpeg = ok(cases["photo.jpg"].data)
    assert video_as_jpeg.media_type == "video/mp4" and video_as_jpeg.n_frames == 10
    assert failure(cases["scan.jpg"].data).reason is ErrorReason.UNSUPPORTED_TYPE


@pytest.mark.parametrize(
    ("name", "reason", "words"),
    [
        ("truncated.mp4", ErrorReason.UNDECODABLE, "truncated or corrupt"),
        ("huge-frame.webm", ErrorReason.TOO_LARGE, "16000×16000"),
        ("long-declared.mp4", ErrorReason.TOO_LARGE, "10.0 h"),
        ("long-real.mp4", ErrorReason.TOO_LARGE, "2.0 h"),
    ],
)
def test_hostile_videos_get_a_clear_reason(name: str, reason: ErrorReason, words: str) -> None:
    item = {i.name: i for i in media.hostile_videos()}[name]
    result = failure(item.data)
    assert result.reason is reason and words in result.detail


def test_hostile_videos_are_scanned_within_bounds() -> None:
    items = {i.name: i for i in media.hostile_videos()}
    many = ok(items["many-frames.mp4"].data)
    assert many.n_frames == 10_000 and len(many.frames) == 8
    assert many.frames[-1].index == 9_999  # sampled across, not just the start
    cut = ok(items["truncated-fragmented.mp4"].data)
    assert 1 <= len(cut.frames) <= 8
    assert cut.frames[0].index == 0
    # A longer video is a setting away.
    long = ok(items["long-real.mp4"].data, DecodeOptions(video=VideoLimits(max_duration_s=7200)))
    assert long.n_frames == 7200 and len(long.frames) == 16


def test_video_limits_are_settings() -> None:
    data = media.video(5, 320, 240, seconds=1.0, fps=10)
    small = DecodeOptions(video=VideoLimits(max_pixels=320 * 240 - 1))
    assert "classify.video_max_pixels" in failure(data, small).detail
    short = DecodeOptions(video=VideoLimits(max_duration_s=0.5))
    assert "classify.video_max_duration_s" in failure(data, short).detail
    tight = DecodeOptions(video=VideoLimits(max_memory_mb=1))
    assert "classify.video_max_memory_mb" in failure(data, tight).detail
    # Out of decoding time: the first frame still comes, and the result says the rest did not.
    hurried = ok(data, DecodeOptions(time_limit_s=1e-9))
    assert len(hurried.frames) == 1 and "decode time limit" in (hurried.limited or "")


# -- the engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("container", media.VIDEO_CONTAINERS)
async def test_one_flagged_frame_flags_the_video_and_is_named(
    make_engine: EngineFactory, container: media.VideoContainer
) -> None:
    engine = await make_engine(classifiers=["colour"], max_frames=16)
    clean = media.video(6, 160, 120, seconds=2.0, fps=8, container=container)
    bad = media.video(6, 160, 120, 2.0, 8, container, special_frame=(7, MAGENTA))
    assert (await engine.evaluate(clean)).decision is Decision.ALLOW
    result = await engine.evaluate(bad, content_type=media.CONTENT_TYPES[container])
    assert result.decision is Decision.FLAG_CSAM
    assert result.media is not None and result.media.type == media.CONTENT_TYPES[container]
    assert result.media.frames == 16 and len(result.media.sampled) == 16
    [frame] = result.media.flagged
    assert (frame.index, frame.decision) == (7, Decision.FLAG_CSAM)
    assert frame.time_s == pytest.approx(7 / 8, abs=0.002)
    assert result.detail is None  # the declared type was right


@pytest.mark.parametrize("kind", ["gif", "apng", "webp"])
async def test_one_flagged_frame_flags_the_animation(make_engine: EngineFactory, kind: str) -> None:
    make = {"gif": media.animated_gif, "apng": media.animated_png, "webp": media.animated_webp}
    engine = await make_engine(classifiers=["colour"], max_frames=16)
    result = await engine.evaluate(make[kind](7, 96, 72, 10, 40, special_frame=(6, MAGENTA)))
    assert result.decision is Decision.FLAG_CSAM
    assert result.media is not None
    assert [(f.index, f.time_s) for f in result.media.flagged] == [(6, 0.24)]


async def test_keyframes_are_sampled_even_where_an_even_spread_passes(
    make_engine: EngineFactory,
) -> None:
    # 60 frames, keyframes at 0, 15, 30, 45. Four evenly spread frames would be 0, 20, 39,
    # 59; the sampler takes half its frames from the keyframes and catches frame 45.
    engine = await make_engine(classifiers=["colour"], max_frames=4)
    data = media.video(8, 160, 120, 6.0, 10, keyframe_interval=15, special_frame=(45, MAGENTA))
    result = await engine.evaluate(data)
    assert result.decision is Decision.FLAG_CSAM
    assert result.media is not None and [f.index for f in result.media.flagged] == [45]
    assert len(result.media.sampled) == 4


@pytest.mark.parametrize("container", media.VIDEO_CONTAINERS)
async def test_frames_between_keyframes_are_sampled(
    make_engine: EngineFactory, container: media.VideoContainer
) -> None:
    # One keyframe in 60 frames (as x264 makes them by default at 30 fps): the even spread
    # decodes frame 20 from the keyframe on (frames no other frame refers to skipped).
    engine = await make_engine(classifiers=["colour"], max_frames=4)
    data = media.video(
        9, 160, 120, 6.0, 10, container, keyframe_interval=60, special_frame=(20, MAGENTA)
    )
    result = await engine.evaluate(data)
    assert result.decision is Decision.FLAG_CSAM
    assert result.media is not None and [f.index for f in result.media.flagged] == [20]


async def test_a_frame_near_a_blocklisted_pdq_flags_the_video(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(classifiers=["hashlist"], max_frames=16)
    photo = Image.open(io.BytesIO(media.photo_jpeg(10, 320, 240)))
    pdq, quality = media.pdq_hash(ImageOps.fit(photo.convert("RGB"), (320, 240)))
    await HashLists(tables.hashlists).add(pdq=pdq, pdq_quality=quality, reason="known")
    clean = media.video(11, 320, 240, seconds=2.0, fps=8)
    assert (await engine.evaluate(clean)).decision is Decision.ALLOW
    bad = media.video(11, 320, 240, seconds=2.0, fps=8, special_frame=(9, photo))
    result = await engine.evaluate(bad)
    assert result.decision is Decision.FLAG_CSAM
    assert result.matched is not None and result.matched.startswith("blocklist:pdq:")
    assert result.media is not None
    [frame] = result.media.flagged
    assert frame.index == 9 and frame.matched == result.matched
    assert result.pdq == result.media.sampled[9].pdq  # the verdict names the frame's hash


async def test_an_allowlisted_first_frame_does_not_clear_the_video(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(
        classifiers=["hashlist", "colour"], max_frames=16, verdict_cache=False
    )
    data = media.video(12, 160, 120, seconds=2.0, fps=8, special_frame=(12, MAGENTA))
    first = (await engine.evaluate(data)).media
    assert first is not None
    await HashLists(tables.hashlists).add(
        pdq=first.sampled[0].pdq, pdq_quality=100, list="allow", reason="intro"
    )
    again = await engine.evaluate(data)
    assert again.decision is Decision.FLAG_CSAM


async def test_the_fast_path_never_clears_an_animation_by_its_first_frame(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(
        classifiers=["hashlist", "colour"], max_frames=16, verdict_cache=False
    )
    data = media.animated_gif(16, 160, 120, 10, 50, special_frame=(8, MAGENTA))
    first = (await engine.evaluate(data)).media
    assert first is not None
    await HashLists(tables.hashlists).add(
        pdq=first.sampled[0].pdq, pdq_quality=100, list="allow", reason="intro"
    )
    assert await engine.lookup_fast(data) is None  # it hashed frame 0 only: the models decide
    assert (await engine.evaluate(data)).decision is Decision.FLAG_CSAM


async def test_a_near_deadline_samples_fewer_frames_and_says_so(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(classifiers=["colour"], max_frames=16)
    data = media.video(13, 160, 120, seconds=2.0, fps=8)
    engine.frame_cost_ms = 1000.0  # as measured on a slow machine: a second per frame
    hurried = await engine.evaluate(data, deadline=utcnow() + timedelta(seconds=6))
    assert hurried.decision is Decision.ALLOW
    assert hurried.media is not None and len(hurried.media.sampled) == 2
    assert "sync deadline: 2 of 16 frames" in (hurried.media.limited or "")
    # Not cached as if complete: the same bytes without a deadline get every frame.
    full = await engine.evaluate(data)
    assert not full.cached and full.media is not None and len(full.media.sampled) == 16


async def test_a_declared_type_that_lies_is_noted_and_ignored(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["colour"])
    cases = {item.name: item for item in media.mislabelled(14)}
    png = cases["clip.mp4"]
    result = await engine.evaluate(png.data, content_type=png.content_type)
    assert result.decision is Decision.ALLOW and result.media is None  # scanned as a PNG
    assert result.detail == "declared video/mp4, content is image/png"
    video = cases["photo.jpg"]
    result = await engine.evaluate(video.data, content_type=video.content_type)
    assert result.media is not None and result.media.type == "video/mp4"
    assert result.detail == "declared image/jpeg, content is video/mp4"


def test_hash_file_of_a_video_gives_its_content_hashes(tmp_path: Path) -> None:
    data = media.video(17, 160, 120, seconds=1.0, fps=8)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    hashes = hash_file(path)
    assert (hashes.sha256, hashes.md5) == (sha256_hex(data), hashlib.md5(data).hexdigest())
    assert hashes.pdq is None  # a frame's PDQ is an image's, not the video's


async def test_the_still_formats_reach_the_models(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["hashlist", "colour"])
    for data in (media.jxl_image(15, 320, 240), media.heic_image(15, 320, 240)):
        result = await engine.evaluate(data)
        assert result.decision is Decision.ALLOW and "colour:red" in result.scores
