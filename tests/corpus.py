"""Generated test objects: harmless images (shapes and noise), corrupt files, non-images.

Nothing objectionable is ever generated or committed; "flagged" objects in pipeline tests
are harmless images whose sha256 is put on the blocklist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pipeline.samples import corrupt_bytes, image_bytes, non_image_bytes

__all__ = ["Corpus", "corrupt_bytes", "image_bytes", "make_corpus", "non_image_bytes"]


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
