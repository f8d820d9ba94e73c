"""The generated test media are what they claim: type, size, frames, determinism, PDQ."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import filetype
import pytest
from av.container import InputContainer
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from tests import media

MARKER = Image.new("RGB", (40, 30), (255, 0, 255))


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _probe(data: bytes) -> InputContainer:
    return av.open(io.BytesIO(data), mode="r")


def _frames(image: Image.Image) -> int:
    return int(getattr(image, "n_frames", 1))


def _is_marker(pixel: Any) -> bool:
    red, green, blue = pixel[:3]
    return red > 230 and green < 30 and blue > 230


# ------------------------------------------------------------------------------ stills


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photo_jpeg_800x600_is_a_photo_sized_jpeg(seed: int) -> None:
    data = media.photo_jpeg(seed, 800, 600)
    image = _open(data)
    assert (image.format, image.size, image.mode) == ("JPEG", (800, 600), "RGB")
    assert filetype.guess_mime(data) == "image/jpeg"
    assert 40_000 <= len(data) <= 120_000, len(data)


def test_photo_jpeg_4000x3000_is_megabytes_and_quality_matters() -> None:
    image = media.photo_image(7, 4000, 3000)
    assert image.size == (4000, 3000)
    q85 = media.photo_jpeg(7, 4000, 3000)
    assert 1_500_000 <= len(q85) <= 5_000_000, len(q85)
    assert _open(q85).size == (4000, 3000)
    small_q60 = media.photo_jpeg(7, 800, 600, quality=60)
    small_q95 = media.photo_jpeg(7, 800, 600, quality=95)
    assert len(small_q60) < len(media.photo_jpeg(7, 800, 600)) < len(small_q95)


def test_photo_jpeg_orientation_tag_swaps_the_displayed_size() -> None:
    image = _open(media.photo_jpeg(3, 640, 480, orientation=6))
    assert image.size == (640, 480)
    assert image.getexif()[0x0112] == 6
    assert ImageOps.exif_transpose(image).size == (480, 640)
    with pytest.raises(ValueError, match="orientation"):
        media.photo_jpeg(3, 64, 64, orientation=9)


def test_photo_detail_drives_size() -> None:
    plain = media.photo_jpeg(4, 640, 480, detail=0.0)
    grainy = media.photo_jpeg(4, 640, 480, detail=1.0)
    assert len(plain) * 1.3 < len(grainy)


def test_screenshot_png_is_flat_ui_with_text() -> None:
    data = media.screenshot_png(5, 1280, 800)
    image = _open(data)
    assert (image.format, image.size) == ("PNG", (1280, 800))
    assert filetype.guess_mime(data) == "image/png"
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    counts = sorted((count for count, _ in colours), reverse=True)
    # Flat panels: a handful of colours cover most of the screen, anti-aliased text adds
    # many rare ones.
    assert sum(counts[:6]) > 0.7 * 1280 * 800
    assert len(colours) > 100
    phone = _open(media.screenshot_png(5, 720, 1560))
    assert phone.size == (720, 1560)


def test_webp_and_png_photo() -> None:
    lossy = media.webp_image(6, 1024, 768)
    lossless = media.webp_image(6, 640, 480, lossless=True, content="screenshot")
    for data, size in ((lossy, (1024, 768)), (lossless, (640, 480))):
        image = _open(data)
        assert (image.format, image.size) == ("WEBP", size)
        assert filetype.guess_mime(data) == "image/webp"
    assert lossy[12:16] == b"VP8 "
    assert lossless[12:16] == b"VP8L"
    png = media.png_photo(6, 640, 480)
    assert (_open(png).format, _open(png).size) == ("PNG", (640, 480))
    assert 300_000 < len(png) < 1_500_000


def test_jxl_avif_heic_decode_back() -> None:
    import pillow_heif
    import pillow_jxl  # noqa: F401  (registers the JXL opener)

    pillow_heif.register_heif_opener()
    for make, fmt, mime in (
        (media.jxl_image, "JXL", None),
        (media.avif_image, "AVIF", "image/avif"),
        (media.heic_image, "HEIF", "image/heic"),
    ):
        data = make(8, 320, 240)
        image = _open(data)
        assert (image.format, image.size) == (fmt, (320, 240)), make.__name__
        if mime:
            assert filetype.guess_mime(data) == mime
    assert media.jxl_image(8, 320, 240)[:2] == b"\xff\x0a"  # bare JPEG XL codestream


# ------------------------------------------------------------------------------ animations


@pytest.mark.parametrize(
    ("make", "fmt", "mime"),
    [
        (media.animated_gif, "GIF", "image/gif"),
        (media.animated_png, "PNG", "image/apng"),
        (media.animated_webp, "WEBP", "image/webp"),
    ],
)
def test_animations_have_their_frames_and_the_special_one(
    make: Callable[..., bytes], fmt: str, mime: str
) -> None:
    data = make(9, 160, 120, 6, 80, special_frame=(4, media._encode(MARKER, "PNG")))
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size, _frames(image), getattr(image, "is_animated", False)) == (
        fmt,
        (160, 120),
        6,
        True,
    )
    assert filetype.guess_mime(data) == mime
    centres = [frame.convert("RGB").getpixel((80, 60)) for frame in ImageSequence.Iterator(image)]
    assert [_is_marker(pixel) for pixel in centres] == [False] * 4 + [True, False]
    plain = Image.open(io.BytesIO(make(9, 160, 120, 6, 80)))
    assert _frames(plain) == 6
    with pytest.raises(ValueError, match="special frame"):
        make(9, 32, 32, 3, special_frame=(3, MARKER))


# ------------------------------------------------------------------------------ video


def test_pyav_wheel_has_the_encoders_the_defaults_need() -> None:
    encoders = media.video_encoders()
    assert set(media.VIDEO_DEFAULT_CODECS.values()) <= set(encoders)
    assert {"libx264", "libx265", "libvpx", "libvpx-vp9", "libsvtav1", "mpeg4"} <= set(encoders)


_DECODER = {"libx264": "h264", "libx265": "hevc", "libvpx-vp9": "vp9"}
_MIME = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
}


@pytest.mark.parametrize("container", media.VIDEO_CONTAINERS)
def test_video_per_container(container: media.VideoContainer) -> None:
    data = media.video(10, 160, 120, seconds=1.5, fps=8, container=container, keyframe_interval=4)
    assert filetype.guess_mime(data) == _MIME[container]
    with _probe(data) as probe:
        stream = probe.streams.video[0]
        assert stream.codec_context.name == _DECODER[media.VIDEO_DEFAULT_CODECS[container]]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        keyframes = [frame.key_frame for frame in probe.decode(stream)]
    assert len(keyframes) == 12
    assert [i for i, key in enumerate(keyframes) if key] == [0, 4, 8]


def test_video_special_frame_audio_and_codec_alias() -> None:
    data = media.video(11, 160, 120, 1.0, 10, "mp4", special_frame=(6, MARKER), audio=True)
    with _probe(data) as probe:
        assert sorted(s.type for s in probe.streams) == ["audio", "video"]
        assert probe.streams.audio[0].codec_context.name == "aac"
        centres = [f.to_image().getpixel((80, 60)) for f in probe.decode(video=0)]
    assert [i for i, pixel in enumerate(centres) if _is_marker(pixel)] == [6]

    av1 = media.video(11, 128, 96, 0.5, 8, "mkv", codec="av1")
    with _probe(av1) as probe:
        assert probe.streams.video[0].codec_context.codec.id == av.Codec("libdav1d").id
    with pytest.raises(ValueError, match="even"):
        media.video(11, 161, 120)


def test_video_faststart_puts_the_index_first() -> None:
    late = media.video(12, 160, 120, 0.5, 8)
    early = media.video(12, 160, 120, 0.5, 8, faststart=True)
    assert late.index(b"moov") > late.index(b"mdat")
    assert early.index(b"moov") < early.index(b"mdat")


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    makers = [
        lambda s: media.photo_jpeg(s, 320, 240),
        lambda s: media.screenshot_png(s, 480, 320),
        lambda s: media.webp_image(s, 320, 240),
        lambda s: media.animated_gif(s, 96, 64, 3),
        lambda s: media.video(s, 96, 64, 0.5, 8, "mp4"),
        lambda s: media.video(s, 96, 64, 0.5, 8, "mkv"),
        lambda s: media.video(s, 96, 64, 0.5, 8, "webm"),
        lambda s: media.video(s, 96, 64, 0.5, 8, "mov"),
    ]
    for make in makers:
        first = make(21)
        assert make(21) == first
        assert make(22) != first


# ------------------------------------------------------------------------------ bad input


def test_truncated_and_corrupt_jpeg() -> None:
    data = media.photo_jpeg(13, 320, 240)
    cut = media.truncated(data, 0.5)
    assert cut == data[: len(data) // 2]
    with pytest.raises(OSError, match="truncated"):
        _open(cut)
    corrupt = media.corrupt_jpeg(13)
    image = Image.open(io.BytesIO(corrupt))
    assert (image.format, image.size) == ("JPEG", (640, 480))
    assert filetype.guess_mime(corrupt) == "image/jpeg"
    with pytest.raises(OSError):
        image.load()


@pytest.mark.parametrize("kind", media.NON_IMAGE_KINDS)
def test_non_images_are_what_they_say_and_not_images(kind: media.NonImageKind) -> None:
    data = media.non_image(kind, 3)
    assert data == media.non_image(kind, 3)
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))
    if kind in ("pdf", "zip"):
        assert filetype.guess_mime(data) == media.CONTENT_TYPES[kind]
    else:
        assert filetype.guess(data) is None
        data.decode("utf-8")
    if kind == "pdf":
        startxref = int(data.rsplit(b"startxref\n", 1)[1].split()[0])
        assert data[startxref:].startswith(b"xref")


def test_mislabelled_items_lie_about_their_type() -> None:
    items = media.mislabelled(2)
    assert {i.content_type for i in items} >= {"video/mp4", "image/png", "image/jpeg"}
    for item in items:
        assert item.content_type != item.real_type
        assert Path(item.name).suffix == "." + media.extension_for(item.content_type)
        if item.real_type not in ("text/html",):
            assert filetype.guess_mime(item.data) == item.real_type, item.name


def test_declared_huge_images_are_tiny_bombs() -> None:
    for fmt in ("png", "gif", "jpeg"):
        data = media.declared_huge_image(fmt)  # type: ignore[arg-type]
        assert len(data) < 2_000
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(data))


def test_hostile_videos() -> None:
    items = {item.name: item for item in media.hostile_videos()}
    with pytest.raises(av.error.InvalidDataError):
        _probe(items["truncated.mp4"].data)

    with _probe(items["truncated-fragmented.mp4"].data) as probe:
        decoded = 0
        with pytest.raises(av.error.InvalidDataError):
            for _ in probe.decode(video=0):
                decoded += 1
    assert 0 < decoded < 48

    huge = items["huge-frame.webm"]
    assert huge.size < 1_000
    with _probe(huge.data) as probe:  # declared only: decoding costs ~400 MB
        context = probe.streams.video[0].codec_context
        assert (context.width, context.height) == (16000, 16000)

    for name, frames, seconds in (
        ("many-frames.mp4", 10_000, 10),
        ("long-declared.mp4", 2, 36_000),
        ("long-real.mp4", 7_200, 7_200),
    ):
        with _probe(items[name].data) as probe:
            assert probe.duration is not None
            assert round(probe.duration / 1_000_000) == seconds, name
            packets = sum(1 for packet in probe.demux(video=0) if packet.size > 0)
        assert packets == frames, name
        assert items[name].size < 500_000


# ------------------------------------------------------------------------------ PDQ


def test_near_duplicates_stay_within_pdq_31() -> None:
    worst: dict[str, int] = {}
    for seed, size in ((0, (800, 600)), (1, (600, 800)), (2, (1024, 576)), (3, (640, 480))):
        original = media.photo_jpeg(seed, *size)
        reference, quality = media.pdq_hash(original)
        assert quality >= 50
        copies = media.near_duplicates(original, seed)
        assert _open(copies["resize_50"]).size == (size[0] // 2, size[1] // 2)
        assert _open(copies["webp"]).format == "WEBP"
        for name, copy in copies.items():
            distance = media.pdq_distance(reference, media.pdq_hash(copy)[0])
            worst[name] = max(worst.get(name, 0), distance)
    print("near-duplicate PDQ distances, worst of 4 photos:", worst)
    assert max(worst.values()) <= 31, worst
    assert worst["png"] == 0

    others = [media.pdq_hash(media.photo_jpeg(seed, 320, 240))[0] for seed in range(10, 16)]
    unrelated = [media.pdq_distance(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
    assert min(unrelated) > 70, unrelated


def test_cropped_cuts_each_side() -> None:
    image = _open(media.cropped(media.photo_jpeg(4, 400, 300), (0.1, 0.0, 0.0, 0.2)))
    assert image.size == (360, 240)
    with pytest.raises(ValueError, match="fractions"):
        media.cropped(media.photo_jpeg(4, 64, 64), 0.6)


# ------------------------------------------------------------------------------ sets


_PILLOW_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def _check_image_item(item: media.MediaItem) -> None:
    image = _open(item.data)
    assert _PILLOW_MIME[image.format or ""] == item.real_type == item.content_type, item.name
    assert image.size == (item.width, item.height), item.name
    if item.frames:
        assert _frames(image) == item.frames


@pytest.fixture(scope="module")
def mix() -> list[media.MediaItem]:
    return media.upload_mix(20, seed=1)


def test_upload_mix_looks_like_an_instance(mix: list[media.MediaItem]) -> None:
    assert len(mix) == 20
    for item in mix:
        assert media.MIN_UPLOAD <= item.size <= media.MAX_UPLOAD, (item.name, item.size)
        _check_image_item(item)
    kinds = [item.content_type for item in mix]
    assert kinds.count("image/jpeg") >= 12
    assert {"image/png", "image/webp", "image/gif"} <= set(kinds)
    long_sides = [max(item.width or 0, item.height or 0) for item in mix if item.kind == "photo"]
    assert min(long_sides) >= 640 and max(long_sides) == 4000
    assert max(item.size for item in mix) > 1_000_000
    assert media.upload_mix(3, seed=1) == mix[:3]


def test_journey_set_and_write_set(tmp_path: Path) -> None:
    items = media.journey_set(0)
    assert len(items) <= 12
    assert sum(item.size for item in items) <= 15_000_000
    images = [item for item in items if item.kind in ("photo", "screenshot")]
    for item in images:
        _check_image_item(item)
    assert {item.real_type for item in images} == {"image/jpeg", "image/png", "image/webp"}
    sides = [max(item.width or 0, item.height or 0) for item in images]
    assert min(sides) <= 320 < 4000 <= max(sides)
    assert min(i.size for i in images) <= 40_000 and max(i.size for i in images) >= 2_000_000
    assert {item.kind for item in items} >= {"corrupt", "non_image"}
    assert {item.real_type for item in items} >= {"application/pdf", "text/plain"}

    plain = media.write_set(items, tmp_path / "plain")
    assert [p.name for p in plain] == [item.name for item in items]
    assert [p.read_bytes() for p in plain] == [item.data for item in items]

    nested = media.write_set(items, tmp_path / "pictrs", layout="pictrs")
    pattern = re.compile(r"^(?:[0-9a-f]{2}/){10}[0-9a-f]{12}\.(jpg|png|webp|pdf|txt)$")
    for path, item in zip(nested, items, strict=True):
        relative = path.relative_to(tmp_path / "pictrs").as_posix()
        assert pattern.match(relative), relative
        assert path.read_bytes() == item.data
    assert nested == media.write_set(items, tmp_path / "pictrs", layout="pictrs")
