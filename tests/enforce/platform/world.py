"""A small Lemmy + pict-rs (+ Mastodon) world for the platform follow-up tests.

Everything is real HTTP on loopback: FakePictrs storing in a moto bucket or a folder,
FakeLemmy proxying to it, FakeMastodon. Media come from tests/media.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pictguard.settings import Settings
from pipeline.events import Decision, ObjectRef, StoreKind, Verdict
from tests.fakes import FakeLemmy, FakeMastodon, FakePictrs
from tests.media import photo_jpeg, screenshot_png
from tests.servers import S3Server

ADMIN = "pictguard-bot"
ADMIN_PASSWORD = "admin-password-8c1d2e"
PICTRS_KEY = "pictrs-api-key-5b7e1f"


@dataclass
class Image:
    """An image seeded into FakePictrs: its bytes, aliases, hash and storage key."""

    data: bytes
    aliases: list[str]
    hash_hex: str
    identifier: str
    variants: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def seed_image(
    pictrs: FakePictrs,
    data: bytes,
    *,
    aliases: int = 1,
    thumbnail: bool = False,
    created_ns: int | None = None,
) -> Image:
    """Upload ``data`` under ``aliases`` aliases (pict-rs dedupes them onto one hash)."""
    first = pictrs.seed(data, created_ns=created_ns)
    names = [first.alias]
    for _ in range(aliases - 1):
        names.append(pictrs.seed(data).alias)
    variants = [pictrs.add_variant(first.alias)] if thumbnail else []
    return Image(data, names, first.hash_hex, first.identifier, variants)


def clean_images(pictrs: FakePictrs, n: int, seed: int = 100) -> list[Image]:
    """Harmless photos and screenshots, one alias each."""
    out = []
    for i in range(n):
        data = photo_jpeg(seed + i, 320, 240) if i % 2 else screenshot_png(seed + i, 320, 200)
        out.append(seed_image(pictrs, data))
    return out


@dataclass
class LemmyWorld:
    """An instance with an admin for pictguard, an uploader and a bystander."""

    lemmy: FakeLemmy
    admin_id: int
    uploader_id: int
    bystander_id: int

    @classmethod
    def create(cls, lemmy: FakeLemmy) -> LemmyWorld:
        lemmy.add_person("first-admin", admin=True, email="first@example.invalid")
        admin = lemmy.add_person(
            ADMIN, password=ADMIN_PASSWORD, admin=True, show_nsfw=True, email="bot@example.invalid"
        )
        uploader = lemmy.add_person("uploader")
        bystander = lemmy.add_person("bystander")
        lemmy.add_community("pics")
        return cls(lemmy, admin, uploader, bystander)

    def uses(self, image: Image) -> tuple[int, int]:
        """The uploader posts the image (as the link) and the bystander quotes its second
        alias in a comment; returns (post id, comment id)."""
        lemmy = self.lemmy
        for alias in image.aliases:
            lemmy.add_local_image(self.uploader_id, alias)
        post = lemmy.add_post(self.uploader_id, name="look", url=lemmy.image_url(image.aliases[0]))
        quoted = image.aliases[-1]
        comment = lemmy.add_comment(
            self.bystander_id, post, f"same: ![]({lemmy.image_url(quoted)})"
        )
        return post, comment


def platform_config(
    pictrs: FakePictrs,
    location: str,
    lemmy: FakeLemmy | None = None,
    **lemmy_policy: Any,
) -> dict[str, Any]:
    """The ``enforce.platform`` section for these fakes."""
    config: dict[str, Any] = {
        "pictrs": {
            "url": pictrs.url,
            "api_key": pictrs.api_key,
            "locations": [location],
            "page_size": 5,
        }
    }
    if lemmy is not None:
        config["lemmy"] = {
            "url": lemmy.url,
            "username": ADMIN,
            "password": ADMIN_PASSWORD,
            **lemmy_policy,
        }
    return config


def settings_with(s3_server: S3Server, tmp_path: Path, prefix: str, **enforce: Any) -> Settings:
    """Settings on the moto server with an ``enforce`` section."""
    return Settings(
        kafka={"topic_prefix": prefix},
        s3={
            "endpoint_url": s3_server.endpoint,
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
            "path_style": True,
        },
        storage={"state_dir": tmp_path / "state"},
        enforce=enforce,
    )


def flagged(
    ref: ObjectRef,
    data: bytes,
    *,
    model_only: bool = False,
    decision: Decision = Decision.FLAG_CSAM,
) -> Verdict:
    """A verdict as classify sends it: a hash-list match, or the models' alone."""
    return Verdict(
        request_id=uuid.uuid4().hex,
        object=ref,
        decision=decision,
        sha256=hashlib.sha256(data).hexdigest(),
        scores={"nudenet:sexual": 0.97, "clip:underage": 0.81} if model_only else {},
        matched=None if model_only else "blocklist:sha256",
        classifiers=["nudenet", "clip"] if model_only else ["hashlist"],
    )


def s3_ref(bucket: str, key: str) -> ObjectRef:
    return ObjectRef(store=StoreKind.S3, bucket=bucket, key=key)


def file_ref(root: Path, key: str) -> ObjectRef:
    return ObjectRef(store=StoreKind.FILE, bucket=str(root.resolve()), key=key)


def tootctl_of(mastodon: FakeMastodon) -> Callable[[str], Any]:
    """A tootctl runner that asks the fake, as `tootctl media lookup` on the host would."""

    async def run(url: str) -> tuple[int, str]:
        return await asyncio.to_thread(mastodon.tootctl_media_lookup, url)

    return run
