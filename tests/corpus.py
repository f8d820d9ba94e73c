"""Generated test objects: harmless images (shapes and noise), corrupt files, non-images.

Nothing objectionable is ever generated or committed; "flagged" objects in pipeline tests
are harmless images whose sha256 is put on the blocklist.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw


def image_bytes(seed: int, fmt: str = "PNG", size: int = 64) -> bytes:
    """A small, unique image: random noise under random rectangles and ellipses."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
        box = (x0, y0, x0 + rng.randrange(4, size // 2), y0 + rng.randrange(4, size // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def corrupt_bytes(seed: int) -> bytes:
    """A JPEG cut off after its header: the type is detectable, the pixels are not."""
    return image_bytes(seed, "JPEG", 96)[:200]


def non_image_bytes(seed: int) -> tuple[bytes, str]:
    """A PDF, a zip or a text file, with the extension it would have."""
    kind = seed % 3
    if kind == 0:
        return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", ".pdf"
    if kind == 1:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("backup.sql", f"-- dump {seed}\n")
        return out.getvalue(), ".zip"
    return f"not an image {seed}\n".encode(), ".txt"


@dataclass
class Corpus:
    objects: dict[str, bytes] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    non_images: set[str] = field(default_factory=set)

    @property
    def clean(self) -> set[str]:
        return set(self.objects) - self.blocked - self.corrupt - self.non_images

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.objects[key]).hexdigest()

    def upload(self, client: Any, bucket: str) -> None:
        for key, data in self.objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=data)


def make_corpus(
    n: int, *, blocked: int, corrupt: int, non_images: int, prefix: str = "media/"
) -> Corpus:
    """``n`` objects in pict-rs-like nested keys, with the given numbers of each kind."""
    corpus = Corpus()
    for i in range(n):
        folder = f"{prefix}{i % 7:02x}/{i % 13:02x}/"
        if i < blocked:
            key = f"{folder}blocked-{i:05d}.png"
            corpus.objects[key] = image_bytes(1_000_000 + i)
            corpus.blocked.add(key)
        elif i < blocked + corrupt:
            key = f"{folder}corrupt-{i:05d}.jpg"
            corpus.objects[key] = corrupt_bytes(i)
            corpus.corrupt.add(key)
        elif i < blocked + corrupt + non_images:
            data, ext = non_image_bytes(i)
            key = f"{folder}file-{i:05d}{ext}"
            corpus.objects[key] = data
            corpus.non_images.add(key)
        else:
            fmt = "JPEG" if i % 2 else "PNG"
            key = f"{folder}img-{i:05d}.{fmt.lower().replace('jpeg', 'jpg')}"
            corpus.objects[key] = image_bytes(i, fmt)
    return corpus
