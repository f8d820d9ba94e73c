"""A malicious media set, generated: bombs, huge dimensions, huge or deeply nested
metadata, polyglots, and hostile videos (tests/media.py ``hostile_videos``: truncated,
declaring 16000×16000 frames, 10,000 frames, 10 hours). Every file is built from bytes
and shapes; none holds a picture of anything.

``hostile_set()`` maps a file name to its bytes; the name says what the file attacks.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib

from PIL import Image

from pipeline.samples import image_bytes
from tests.media import hostile_videos


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(
    width: int, height: int, depth: int, colour: int, chunks: list[bytes], idat: bytes
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(chunks)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _zeros_compressed(total: int, row: int) -> bytes:
    """``total`` zero bytes, deflated in one stream (a filter byte 0 starts every row)."""
    packer = zlib.compressobj(9)
    line = b"\0" * row
    out = [packer.compress(line) for _ in range(total // row)]
    out.append(packer.flush())
    return b"".join(out)


def png_bomb(side: int = 30_000) -> bytes:
    """A real 1-bit PNG of side×side pixels: ~110 KB on disk, 900 megapixels decoded."""
    row = 1 + (side + 7) // 8
    return _png(side, side, 1, 0, [], _zeros_compressed(row * side, row))


def png_bomb_under_limit(side: int = 7_900) -> bytes:
    """An RGB PNG just under the pixel limit (62 MP, 187 MB decoded), ~200 KB on disk."""
    row = 1 + side * 3
    return _png(side, side, 8, 2, [], _zeros_compressed(row * side, row))


def png_bomb_rgba16(side: int = 7_900) -> bytes:
    """A 16-bit RGBA PNG just under the pixel limit: ~0.5 MB on disk, ~1.2 GB to decode
    (the full-size RGBA image, its composite on white and the RGB copy, before shrinking)."""
    row = 1 + side * 8
    return _png(side, side, 16, 6, [], _zeros_compressed(row * side, row))


def png_text_bomb() -> bytes:
    """A small PNG with a zTXt chunk that inflates to 64 MB of text."""
    packer = zlib.compressobj(9)
    text = b"".join(packer.compress(b"A" * 1_048_576) for _ in range(64)) + packer.flush()
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + text)
    small = Image.new("RGB", (8, 8), (10, 20, 30))
    raw = b"".join(b"\0" + small.tobytes()[y * 24 : (y + 1) * 24] for y in range(8))
    return _png(8, 8, 8, 2, [ztxt], zlib.compress(raw))


def png_many_text_chunks(n: int = 20_000) -> bytes:
    small = Image.new("RGB", (8, 8), (1, 2, 3))
    raw = b"".join(b"\0" + small.tobytes()[y * 24 : (y + 1) * 24] for y in range(8))
    chunks = [_chunk(b"tEXt", b"k%d\0" % i + b"v" * 200) for i in range(n)]
    return _png(8, 8, 8, 2, chunks, zlib.compress(raw))


def jpeg_huge_dimensions() -> bytes:
    """A valid small JPEG whose SOF header claims 65500×65500."""
    data = bytearray(image_bytes(3, "JPEG", 64))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def gif_huge_screen() -> bytes:
    """A 1×1 GIF frame on a logical screen of 65535×65535."""
    out = io.BytesIO()
    Image.new("P", (1, 1)).save(out, "GIF")
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def gif_many_frames(n: int = 20_000) -> bytes:
    frames = [Image.new("P", (2, 2), i % 256) for i in range(min(n, 256))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    one = out.getvalue()
    # Repeat the frame blocks (graphic control + image descriptor + data) up to n frames.
    start = one.find(b"\x21\xf9")
    body = one[start:-1]
    return one[:start] + body * (n // len(frames)) + b"\x3b"


def bmp_huge_dimensions() -> bytes:
    data = bytearray(image_bytes(4, "BMP", 16))
    data[18:26] = struct.pack("<ii", 2**31 - 1, 2**31 - 1)
    return bytes(data)


def tiff_many_pages(n: int = 500) -> bytes:
    pages = [Image.new("L", (1, 1), i % 256) for i in range(n)]
    out = io.BytesIO()
    pages[0].save(out, "TIFF", save_all=True, append_images=pages[1:])
    return out.getvalue()


def tiff_ifd_loop() -> bytes:
    """A TIFF whose next-IFD offset points back at its own first IFD."""
    out = io.BytesIO()
    Image.new("L", (4, 4), 7).save(out, "TIFF")
    data = bytearray(out.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first : first + 2])[0]
    next_at = first + 2 + entries * 12
    data[next_at : next_at + 4] = struct.pack("<I", first)
    return bytes(data)


def _app(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_exif_loop() -> bytes:
    """EXIF whose IFD0 points (ExifIFD, GPS IFD and next IFD) back at itself."""
    ifd = struct.pack("<H", 3)
    for tag in (0x8769, 0x8825, 0x0112):  # ExifIFD, GPSInfo, Orientation
        value = 8 if tag != 0x0112 else 6
        ifd += struct.pack("<HHII", tag, 4 if tag != 0x0112 else 3, 1, value)
    ifd += struct.pack("<I", 8)  # next IFD: itself
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd
    jpeg = image_bytes(5, "JPEG", 64)
    return jpeg[:2] + _app(0xE1, b"Exif\0\0" + tiff) + jpeg[2:]


def jpeg_deep_exif() -> bytes:
    """EXIF with a chain of 4,000 IFDs, each pointing to the next (64 KB in all)."""
    count = 4000
    tiff = bytearray(b"II*\0" + struct.pack("<I", 8))
    for i in range(count):
        here = 8 + i * 18
        nxt = here + 18 if i < count - 1 else 0
        tiff += (
            struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, nxt) + struct.pack("<I", nxt)
        )
    jpeg = image_bytes(6, "JPEG", 64)
    return jpeg[:2] + _app(0xE1, b"Exif\0\0" + bytes(tiff[:65000])) + jpeg[2:]


def jpeg_huge_icc() -> bytes:
    """A JPEG carrying 255 ICC chunks of 64 KB (a 16 MB profile), all garbage."""
    jpeg = image_bytes(7, "JPEG", 64)
    chunks = b"".join(
        _app(0xE2, b"ICC_PROFILE\0" + bytes([i + 1, 255]) + b"\x5a" * 65000) for i in range(255)
    )
    return jpeg[:2] + chunks + jpeg[2:]


def jpeg_nested_xmp() -> bytes:
    depth = 6000
    xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + b"<a>" * depth + b"</a>" * depth
    jpeg = image_bytes(8, "JPEG", 64)
    return jpeg[:2] + _app(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp[:65000]) + jpeg[2:]


def webp_huge_canvas() -> bytes:
    """An animated WebP (VP8X) claiming a 16384×16384 canvas."""
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=50)
    data = bytearray(out.getvalue())
    vp8x = data.find(b"VP8X")
    data[vp8x + 12 : vp8x + 18] = (16383).to_bytes(3, "little") * 2
    return bytes(data)


def jxl_huge_dimensions(side: int = 60_000) -> bytes:
    """A JPEG XL codestream whose SizeHeader declares side×side pixels, then garbage.

    pillow-jxl-plugin decodes the whole image while opening the file; the size must be
    read and refused first.
    """
    # SizeHeader, bits from the least significant: small=0, height as U32 selector 2
    # (18 bits, minus one), aspect-ratio code 1 (width = height).
    bits = (2 << 1) | ((side - 1) << 3) | (1 << 21)
    return b"\xff\x0a" + bits.to_bytes(8, "little") + b"\x5a" * 256


def gifar() -> bytes:
    """A GIF with a ZIP archive appended (the classic GIFAR polyglot)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.writestr("payload.class", b"\xca\xfe\xba\xbe" + b"\0" * 64)
    return image_bytes(9, "GIF", 32) + archive.getvalue()


def png_with_html() -> bytes:
    script = b"<html><script>fetch('http://127.0.0.1:1/x')</script></html>"
    return image_bytes(10, "PNG", 32) + script


def jpeg_pdf_polyglot() -> bytes:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript >> >> endobj\n%%EOF"
    jpeg = image_bytes(11, "JPEG", 32)
    return jpeg[:2] + _app(0xFE, pdf) + jpeg[2:]


def html_with_png_magic() -> bytes:
    return b"\x89PNG\r\n\x1a\n<html><body onload=alert(1)></body></html>"


def svg_xxe() -> bytes:
    return (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">'
        b'<!ENTITY a "&x;&x;&x;&x;&x;&x;&x;&x;">]><svg xmlns="http://www.w3.org/2000/svg">'
        b"&a;</svg>"
    )


def zip_named_png() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", b"\0" * 50_000_000)  # a zip bomb, for good measure
    return archive.getvalue()


@functools.cache
def hostile_set() -> dict[str, bytes]:
    """The whole set, built once per process (about two seconds)."""
    return {
        "bomb-900mp.png": png_bomb(),
        "bomb-62mp-rgb.png": png_bomb_under_limit(),
        "bomb-62mp-rgba16.png": png_bomb_rgba16(),
        "text-bomb-64mb.png": png_text_bomb(),
        "20000-text-chunks.png": png_many_text_chunks(),
        "huge-dims.jpg": jpeg_huge_dimensions(),
        "huge-screen.gif": gif_huge_screen(),
        "20000-frames.gif": gif_many_frames(),
        "huge-dims.bmp": bmp_huge_dimensions(),
        "500-pages.tiff": tiff_many_pages(),
        "ifd-loop.tiff": tiff_ifd_loop(),
        "exif-loop.jpg": jpeg_exif_loop(),
        "exif-4000-ifds.jpg": jpeg_deep_exif(),
        "icc-16mb.jpg": jpeg_huge_icc(),
        "xmp-nested.jpg": jpeg_nested_xmp(),
        "huge-canvas.webp": webp_huge_canvas(),
        "gifar.gif": gifar(),
        "png-plus-html.png": png_with_html(),
        "jpeg-pdf.jpg": jpeg_pdf_polyglot(),
        "html-png-magic.png": html_with_png_magic(),
        "xxe.svg": svg_xxe(),
        "zip-bomb.png": zip_named_png(),
        "huge-dims.jxl": jxl_huge_dimensions(),
        **{item.name: item.data for item in hostile_videos()},
    }


# The names, without building the files (test parametrisation happens at collection).
HOSTILE_NAMES = (
    "bomb-900mp.png",
    "bomb-62mp-rgb.png",
    "bomb-62mp-rgba16.png",
    "text-bomb-64mb.png",
    "20000-text-chunks.png",
    "huge-dims.jpg",
    "huge-screen.gif",
    "20000-frames.gif",
    "huge-dims.bmp",
    "500-pages.tiff",
    "ifd-loop.tiff",
    "exif-loop.jpg",
    "exif-4000-ifds.jpg",
    "icc-16mb.jpg",
    "xmp-nested.jpg",
    "huge-canvas.webp",
    "gifar.gif",
    "png-plus-html.png",
    "jpeg-pdf.jpg",
    "html-png-magic.png",
    "xxe.svg",
    "zip-bomb.png",
    "huge-dims.jxl",
    "truncated.mp4",
    "truncated-fragmented.mp4",
    "huge-frame.webm",
    "many-frames.mp4",
    "long-declared.mp4",
    "long-real.mp4",
)

HOSTILE_VIDEO_NAMES = tuple(name for name in HOSTILE_NAMES if name.endswith((".mp4", ".webm")))
