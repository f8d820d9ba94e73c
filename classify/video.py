"""Video: a bounded sample of frames from MP4, MOV, WebM and MKV, through PyAV (FFmpeg).

The limits hold before any frame decodes: the container is opened with the demuxer the
bytes call for (never a probe over every FFmpeg format), and the declared frame size,
the decoder's estimated memory and the duration are checked from the headers. The codec
is opened with FFmpeg's own ``max_pixels``, so a bitstream that declares a bigger frame
than its container fails instead of allocating it.

Which frames: an index pass reads every packet's timestamp and keyframe flag (no
decoding, ~8 µs a packet), then up to ``max_frames`` targets are chosen: half from the
keyframes, spread over the video (scene cuts tend to land on keyframes, and a keyframe
decodes on its own), the rest an even spread over all frames, so a video with one
keyframe every ten seconds is still sampled throughout. Two passes decode them:

1. keyframe targets: only their packets go to the decoder;
2. the other targets: from their group of pictures' keyframe up to the target, packets
   of groups without a target skipped, the rest of a group skipped once its targets are
   out.

Frames are converted to RGB already shrunk (``frame.reformat`` with area averaging, the
same factor the image path uses), so no full-size RGB copy of a 4K frame is made. The
clock is checked between packets: when ``time_limit_s`` runs out the frames decoded so
far are used and the result says so (``limited``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from classify.decode import (
    DecodeError,
    DecodeOptions,
    FrameInfo,
    Prepared,
    VideoLimits,
    sample_indices,
    shrink_factor,
)
from classify.hashing import pdq_from_frame
from pipeline.events import ErrorReason

# The demuxer for each container type :func:`pipeline.mediatype.sniff` recognises.
DEMUXERS: dict[str, str] = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
}
_FORMATS = {
    "video/mp4": "MP4",
    "video/quicktime": "MOV",
    "video/webm": "WEBM",
    "video/x-matroska": "MKV",
}
# Decoders pictguard lets run: what phones, browsers, screen recorders and pict-rs write.
# FFmpeg has hundreds; each is attack surface a media store does not need.
DECODERS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "mpeg4"})
# H.264 and HEVC keep up to 16 reference frames (VP9 and AV1: 8); the decoder also holds
# the frame being decoded, one being output, and one per extra thread.
_REFERENCE_FRAMES = 16
# Packets between two looks at the clock while indexing (a look costs ~0.1 µs).
_CHECK_EVERY = 256
# NAL units looked at for a slice header (parameter sets and SEI come first).
_MAX_NALS = 16
# Display rotation (degrees counter-clockwise, as FFmpeg reports it) → the transpose
# that shows the frame upright.
_ROTATIONS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True, slots=True)
class _Packet:
    pts: int
    key: bool
    reference: bool = True  # other frames may need it (False only where the bitstream says)


@dataclass
class _Index:
    """The video's frames: decode order, display order, keyframes, groups of pictures."""

    packets: list[_Packet]  # decode order
    display: list[int]  # pts, display order
    time_base: Fraction

    def __post_init__(self) -> None:
        self.position = {pts: i for i, pts in enumerate(self.display)}
        self.gop: list[int] = []  # decode position → its group's first packet
        start = 0
        for i, packet in enumerate(self.packets):
            if packet.key:
                start = i
            self.gop.append(start)
        self.gop_of_pts = {p.pts: self.gop[i] for i, p in enumerate(self.packets)}

    def is_key(self, pts: int) -> bool:
        """Whether the frame at ``pts`` starts its group of pictures (decodes alone)."""
        return self.packets[self.gop_of_pts[pts]].pts == pts

    def seconds(self, pts: int) -> float:
        return float((pts - self.display[0]) * self.time_base)


def prepare_video(data: bytes, media_type: str, options: DecodeOptions) -> Prepared:
    """Sample, shrink, hash and preprocess a video's frames; :class:`DecodeError` if it
    cannot be, or may not be, decoded."""
    stop_at = time.perf_counter() + options.time_limit_s
    limits = options.video
    label = media_type
    with _open(data, media_type) as container:
        stream = _video_stream(container, label)
        codec = stream.codec_context
        width, height = int(codec.width), int(codec.height)
        _check_size(label, width, height, codec, limits)
        declared = _declared_duration(container, stream)
        if declared is not None and declared > limits.max_duration_s:
            raise DecodeError(
                ErrorReason.TOO_LARGE,
                f"{label} lasts {_duration(declared)}, above classify.video_max_duration_s "
                f"({_duration(limits.max_duration_s)})",
            )
        index = _read_index(container, stream, stop_at, label)
        if not index.display:
            raise DecodeError(ErrorReason.UNDECODABLE, f"{label}: the video stream holds no frames")
        duration = index.seconds(index.display[-1])
        if duration > limits.max_duration_s:
            raise DecodeError(
                ErrorReason.TOO_LARGE,
                f"{label}: frames run to {_duration(duration)}, above "
                f"classify.video_max_duration_s ({_duration(limits.max_duration_s)})",
            )
        targets = plan(index, options.max_frames)
        decoder = _Decoder(data, media_type, container, index, options, stop_at)
        decoder.factor = shrink_factor(width, height, options)
        try:
            timed_out = decoder.keyframes([pts for pts in targets if index.is_key(pts)])
            if not timed_out:
                timed_out = decoder.others([p for p in targets if p not in decoder.decoded])
        finally:
            decoder.close(container)
        decoded, factor = decoder.decoded, decoder.factor
    if not decoded:
        if timed_out:
            raise DecodeError(
                ErrorReason.TIMEOUT,
                f"{label}: no frame decoded within classify.video_max_decode_s "
                f"({options.time_limit_s:g} s)",
            )
        raise DecodeError(
            ErrorReason.UNDECODABLE, f"{label}: no frame could be decoded (truncated or corrupt)"
        )
    limited = None
    if len(decoded) < len(targets):
        why = (
            f"decode time limit ({options.time_limit_s:g} s)"
            if timed_out
            else "data stops short or is corrupt"
        )
        limited = f"{why}: {len(decoded)} of {len(targets)} planned frames"
    length = max(duration, declared or 0.0)
    return _prepared(label, width, height, index, decoded, factor, options, length, limited)


def plan(index: _Index, max_frames: int) -> list[int]:
    """The pts of the frames to classify, in display order: half the budget spread over
    the keyframes, the rest an even spread over all frames."""
    display = index.display
    if len(display) <= max_frames:
        return list(display)
    keys = sorted(p.pts for p in index.packets if p.key)
    picked = {index.position[keys[i]] for i in sample_indices(len(keys), -(-max_frames // 2))}
    spread = max_frames
    while len(picked) < max_frames:
        # The even spread, farthest from what is already picked first: a budget that runs
        # out part-way still covers the whole video.
        candidates = [i for i in sample_indices(len(display), spread) if i not in picked]
        while candidates and len(picked) < max_frames:
            best = max(candidates, key=lambda i: min(abs(i - j) for j in picked))
            picked.add(best)
            candidates.remove(best)
        spread *= 2
    return sorted(display[i] for i in picked)


# -- opening and checking --------------------------------------------------------------


def _open(data: bytes, media_type: str) -> Any:
    demuxer = DEMUXERS.get(media_type)
    if demuxer is None:
        raise DecodeError(ErrorReason.UNSUPPORTED_TYPE, f"{media_type} (video container)")
    try:
        return av.open(io.BytesIO(data), format=demuxer, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(
            ErrorReason.UNDECODABLE,
            f"{media_type}: the container cannot be read (truncated or corrupt: {_why(exc)})",
        ) from None


def _video_stream(container: Any, label: str) -> Any:
    if not container.streams.video:
        raise DecodeError(ErrorReason.UNSUPPORTED_TYPE, f"{label} without a video stream")
    stream = container.streams.video[0]
    name = stream.codec_context.name
    if name not in DECODERS:
        raise DecodeError(
            ErrorReason.UNSUPPORTED_TYPE, f"{label} with {name} video (not decoded by pictguard)"
        )
    return stream


def _check_size(label: str, width: int, height: int, codec: Any, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(ErrorReason.UNDECODABLE, f"{label} declares {width}×{height} frames")
    if width * height > limits.max_pixels:
        raise DecodeError(
            ErrorReason.TOO_LARGE,
            f"{label} declares {width}×{height} frames ({width * height:,} pixels), above "
            f"classify.video_max_pixels ({limits.max_pixels:,})",
        )
    needed = decoder_memory_mb(width, height, codec.format.name if codec.format else None, limits)
    if needed > limits.max_memory_mb:
        raise DecodeError(
            ErrorReason.TOO_LARGE,
            f"{label}: decoding {width}×{height} frames needs about {needed:.0f} MB, above "
            f"classify.video_max_memory_mb ({limits.max_memory_mb})",
        )


def decoder_memory_mb(width: int, height: int, pix_fmt: str | None, limits: VideoLimits) -> float:
    """The decoder's working set, estimated: one frame's planes × (16 references + the
    frame in work + the one going out + one per extra thread)."""
    try:
        planes = av.VideoFormat(pix_fmt or "yuv420p", width, height).components
        frame = sum(c.width * c.height * (2 if c.bits > 8 else 1) for c in planes)
    except (ValueError, TypeError, av.FFmpegError):
        frame = width * height * 3  # unknown format: the 4:4:4 8-bit size
    copies = _REFERENCE_FRAMES + 2 + max(0, limits.threads - 1)
    return frame * copies / 2**20


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def _read_index(container: Any, stream: Any, stop_at: float, label: str) -> _Index:
    packets: list[_Packet] = []
    references = _reference_reader(stream)
    try:
        for count, packet in enumerate(container.demux(stream)):
            if count and count % _CHECK_EVERY == 0 and time.perf_counter() > stop_at:
                raise DecodeError(
                    ErrorReason.TOO_LARGE,
                    f"{label}: more than {count:,} frames to index within "
                    "classify.video_max_decode_s",
                )
            pts = packet.pts if packet.pts is not None else packet.dts
            if packet.size and pts is not None:
                packets.append(_Packet(int(pts), bool(packet.is_keyframe), references(packet)))
    except av.FFmpegError:
        pass  # the data stops or breaks here: the frames before it are still there
    if packets and not packets[0].key:
        # A stream that starts mid-group (a cut file): its first frames may not decode,
        # the second pass tries them from the start all the same.
        packets[0] = _Packet(packets[0].pts, True)
    display = sorted({p.pts for p in packets})
    return _Index(packets, display, stream.time_base or Fraction(1, 1000))


def _reference_reader(stream: Any) -> Callable[[Any], bool]:
    """A function telling whether a packet's picture may be referenced by others.

    H.264 (``nal_ref_idc``) and HEVC (sub-layer non-reference NAL types) say so in the
    first slice's NAL header; a frame nothing refers to need not be decoded on the way to
    a later one, which halves the work between keyframes of a typical phone or x264
    video. Anything else, or data that does not parse, counts as a reference.
    """
    name = stream.codec_context.name
    extradata = bytes(stream.codec_context.extradata or b"")
    if name == "h264" and len(extradata) > 4 and extradata[0] == 1:
        size, hevc = (extradata[4] & 3) + 1, False
    elif name == "hevc" and len(extradata) > 21 and extradata[0] == 1:
        size, hevc = (extradata[21] & 3) + 1, True
    else:
        return lambda packet: True

    def is_reference(packet: Any) -> bool:
        data = memoryview(packet)
        at = 0
        for _ in range(_MAX_NALS):
            if at + size >= len(data):
                return True
            length = int.from_bytes(data[at : at + size], "big")
            header = data[at + size]
            if hevc:
                kind = (header >> 1) & 0x3F
                if kind < 32:  # a slice: even types up to 14 are sub-layer non-reference
                    return not (kind <= 14 and kind % 2 == 0)
            else:
                kind = header & 0x1F
                if kind in (1, 5):  # a slice of a non-IDR or IDR picture
                    return bool(header & 0x60)
            at += size + length
        return True

    return is_reference


# -- decoding ----------------------------------------------------------------------------


class _Decoder:
    """Decodes chosen frames of one open video, shrunk to RGB as they come out."""

    def __init__(
        self,
        data: bytes,
        media_type: str,
        container: Any,
        index: _Index,
        options: DecodeOptions,
        stop_at: float,
    ) -> None:
        self.data = data
        self.media_type = media_type
        self.container = container
        self.index = index
        self.options = options
        self.stop_at = stop_at
        self.factor = 1
        self.decoded: dict[int, Image.Image] = {}
        # One converter for every frame: FFmpeg's scaler is set up once, not per frame.
        self.reformatter = VideoReformatter()
        self.codec = self._configured(container)

    def _configured(self, container: Any) -> Any:
        codec = container.streams.video[0].codec_context
        codec.thread_count = self.options.video.threads
        codec.thread_type = "AUTO" if self.options.video.threads > 1 else "SLICE"
        # FFmpeg refuses to allocate a bigger frame than this, whatever the bitstream says.
        codec.options = {"max_pixels": str(self.options.video.max_pixels)}
        return codec

    def close(self, opened: Any) -> None:
        """Close the container if it is not ``opened`` (the one the caller closes)."""
        if self.container is not opened:
            self.container.close()

    def keyframes(self, wanted: list[int]) -> bool:
        """Decode the keyframes among the targets, feeding the decoder nothing else; True
        if the clock ran out."""
        if not wanted:
            return False
        pending, unfed = set(wanted), set(wanted)
        for packet in self._packets():
            pts = _pts(packet)
            if pts not in unfed:
                continue
            if self.decoded and time.perf_counter() > self.stop_at:
                return True  # the first frame always decodes
            unfed.discard(pts)
            self._take(self._decode(packet), pending)
            if not unfed:
                break
        # Frames the decoder still holds back for reordering come out as it drains.
        self._take(self._decode(None), pending)
        self.codec.flush_buffers()
        return False

    def others(self, wanted: list[int]) -> bool:
        """Decode the remaining targets from their groups' keyframes, skipping groups
        without a target and the rest of a group once its targets are out; True if the
        clock ran out."""
        if not wanted:
            return False
        gop_of = self.index.gop_of_pts
        skippable = {p.pts for p in self.index.packets if not p.reference} - set(wanted)
        by_gop: dict[int, set[int]] = {}
        for pts in wanted:
            by_gop.setdefault(gop_of[pts], set()).add(pts)
        feeding: int | None = None  # the group whose packets go to the decoder
        for packet in self._packets():
            at = _pts(packet)
            gop = None if at is None else gop_of.get(at)
            if gop is None:
                continue
            if gop != feeding and feeding is not None:
                # Leaving a group: what it still owes comes out as the decoder drains.
                self._take(self._decode(None), by_gop.pop(feeding))
                self.codec.flush_buffers()
                feeding = None
            if not by_gop:
                return False
            if gop not in by_gop:
                continue
            if self.decoded and time.perf_counter() > self.stop_at:
                return True
            feeding = gop
            if at in skippable:
                continue  # no other frame needs it, and it is not sampled
            self._take(self._decode(packet), by_gop[gop])
            if not by_gop[gop]:
                del by_gop[gop]  # its targets are out: skip the rest of the group
                self.codec.flush_buffers()
                feeding = None
        if feeding is not None:
            self._take(self._decode(None), by_gop[feeding])
        return False

    def _packets(self) -> Iterator[Any]:
        """The video stream's packets from the start (empty ones, the end-of-stream
        marker, left out); a stream that cannot seek back is opened again."""
        try:
            self.container.seek(0, backward=True, any_frame=False)
        except av.FFmpegError:
            self.close(None)
            self.container = _open(self.data, self.media_type)
            self.codec = self._configured(self.container)
        stream = self.container.streams.video[0]
        try:
            for packet in self.container.demux(stream):
                if packet.size:
                    yield packet
        except av.FFmpegError:
            return

    def _decode(self, packet: Any) -> list[Any]:
        """The frames ``packet`` completes (None drains the decoder); a broken packet gives
        none."""
        try:
            return list(self.codec.decode(packet))
        except av.FFmpegError:
            return []

    def _take(self, frames: list[Any], pending: set[int]) -> None:
        for frame in frames:
            if frame.pts in pending:
                pending.discard(frame.pts)
                self.decoded[int(frame.pts)] = self._to_rgb(frame)

    def _to_rgb(self, frame: Any) -> Image.Image:
        """The frame as a shrunken RGB image, turned upright."""
        width, height = int(frame.width), int(frame.height)
        if width * height > self.options.video.max_pixels:  # FFmpeg's max_pixels refuses first
            raise DecodeError(ErrorReason.TOO_LARGE, f"a {width}×{height} frame")
        small = self.reformatter.reformat(
            frame,
            width=-(-width // self.factor),
            height=-(-height // self.factor),
            format="rgb24",
            interpolation="AREA",
        )
        image = Image.fromarray(small.to_ndarray())
        rotation = round(getattr(frame, "rotation", 0) or 0) % 360
        if rotation in _ROTATIONS:
            image = image.transpose(_ROTATIONS[rotation])
        return image


def _pts(packet: Any) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _prepared(
    label: str,
    width: int,
    height: int,
    index: _Index,
    decoded: dict[int, Image.Image],
    factor: int,
    options: DecodeOptions,
    duration: float,
    limited: str | None,
) -> Prepared:
    frames: list[FrameInfo] = []
    inputs = []
    for pts in sorted(decoded):
        image = decoded[pts]
        swapped = image.size != (-(-width // factor), -(-height // factor))
        displayed = (height, width) if swapped else (width, height)
        pdq, quality = pdq_from_frame(np.asarray(image.convert("L")), displayed)
        position = index.position[pts]
        frames.append(
            FrameInfo(position, round(index.seconds(pts), 3), pdq, quality, index.is_key(pts))
        )
        inputs.append(tuple(pre(image) for pre in options.preprocessors))
    first = decoded[min(decoded)]
    return Prepared(
        format=_FORMATS.get(label, label),
        width=width,
        height=height,
        n_frames=len(index.display),
        pdq=frames[0].pdq,
        pdq_quality=frames[0].pdq_quality,
        frame_size=first.size,
        inputs=inputs,
        media_type=label,
        frames=frames,
        duration_s=round(duration, 3),
        limited=limited,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _why(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)
