"""What a piece of media is, read from its bytes: never from a header or a file name.

An uploader chooses the ``Content-Type`` header and the file name; the bytes decide what
a decoder will make of the file. Every role that needs the type (classify to pick a
decoder, the validate API to apply ``api.video``) asks :func:`sniff`, and a declared type
that disagrees is only worth a note in the verdict (:func:`mismatch`).
"""

from __future__ import annotations

import filetype

# How many leading bytes the signatures need (ISO-BMFF brands, the Matroska DocType).
_HEAD = 8192

# JPEG XL: a bare codestream, or the ISO-BMFF-style container (``filetype`` knows neither).
_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"

VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm", "video/x-matroska"})
"""The video containers classify samples frames from (MP4, MOV, WebM, MKV)."""

# Names that mean the same type; the first of each group is the one :func:`sniff` gives.
_ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/apng": "image/png",  # an APNG is a PNG to every decoder that ignores its frames
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
    "image/avif-sequence": "image/avif",
    "image/x-icon": "image/vnd.microsoft.icon",
    "image/x-ms-bmp": "image/bmp",
    "video/x-m4v": "video/mp4",
}
# Declared types that say nothing: no mismatch is noted for them.
_UNINFORMATIVE = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def sniff(data: bytes) -> str:
    """The media type of ``data`` from its signature; ``application/octet-stream`` when
    nothing is recognised."""
    head = data[:_HEAD]
    if head.startswith(_JXL_CODESTREAM) or head.startswith(_JXL_CONTAINER):
        return "image/jxl"
    kind = filetype.guess_mime(head)
    if kind is not None:
        return str(kind)
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "image/svg+xml"
    if text.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return "application/octet-stream"


def is_video(media_type: str) -> bool:
    """Whether ``media_type`` (as :func:`sniff` gives it) is a video container."""
    return media_type.startswith("video/")


def normalise(content_type: str | None) -> str:
    """``content_type`` without parameters, lower case, aliases resolved ("" for None)."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def mismatch(declared: str | None, actual: str) -> str | None:
    """A note for the verdict when the declared type is not what the bytes are, else None.

    Aliases (``image/jpg``, ``image/apng`` for a PNG…) and uninformative declarations
    (none, ``application/octet-stream``) are not a mismatch.
    """
    wanted = normalise(declared)
    if wanted in _UNINFORMATIVE or wanted == normalise(actual):
        return None
    return f"declared {wanted}, content is {actual}"
