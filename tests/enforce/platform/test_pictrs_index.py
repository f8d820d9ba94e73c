"""The sha256 → pict-rs hash index: read incrementally, resumed from a persisted cursor.

Against FakePictrs over HTTP (``/internal/hashes`` pages newest first, as sled orders them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforce.platform.http import PlatformError
from enforce.platform.pictrs import HashPage, PictrsClient, PictrsIndex
from enforce.platform.settings import PictrsSettings
from pipeline.state.sqlite import SqliteState
from tests.enforce.platform.world import PICTRS_KEY, Image, seed_image
from tests.fakes import FakePictrs, FilesystemStore
from tests.media import photo_jpeg, screenshot_png, webp_image

MINUTE_NS = 60 * 1_000_000_000


class CountingClient(PictrsClient):
    """The real client, counting the pages it asked for."""

    pages = 0

    async def hashes(self, **kwargs: object) -> HashPage:  # type: ignore[override]
        type(self).pages += 1
        return await super().hashes(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FakePictrs]:
    """pict-rs with its filesystem store."""
    with FakePictrs(FilesystemStore(tmp_path / "files"), api_key=PICTRS_KEY) as server:
        yield server


def settings(pictrs: FakePictrs, page_size: int = 4) -> PictrsSettings:
    return PictrsSettings(
        url=pictrs.url, api_key=PICTRS_KEY, locations=["/srv/pictrs/files"], page_size=page_size
    )


def uploads(pictrs: FakePictrs, n: int, start: int, first_ns: int) -> list[Image]:
    """``n`` images uploaded two minutes apart (older first)."""
    makers = (
        lambda i: photo_jpeg(i, 160, 120),
        lambda i: screenshot_png(i, 160, 100),
        lambda i: webp_image(i, 160, 120),
    )
    return [
        seed_image(pictrs, makers[i % 3](start + i), created_ns=first_ns + 2 * i * MINUTE_NS)
        for i in range(n)
    ]


async def index_for(pictrs: FakePictrs, state: SqliteState) -> PictrsIndex:
    CountingClient.pages = 0
    index = PictrsIndex(CountingClient(settings(pictrs)), state, page_size=4)
    await index.start()
    return index


async def test_new_uploads_are_read_from_the_top_down_to_the_last_walk(
    files: FakePictrs, state: SqliteState
) -> None:
    base = time.time_ns() - 10 * 24 * 3600 * 10**9
    old = uploads(files, 10, 0, base)
    index = await index_for(files, state)

    newest = await index.find(old[-1].sha256)
    assert newest is not None and newest.hex == old[-1].hash_hex
    assert newest.aliases == tuple(old[-1].aliases)
    assert CountingClient.pages == 1  # the first page holds it: no deeper page read

    later = uploads(files, 3, 100, base + 100 * MINUTE_NS)
    read_before = index.hashes_read
    hit = await index.find(later[0].sha256)
    assert hit is not None and hit.hex == later[0].hash_hex
    # Only what was uploaded since: the walk stops at the previous top.
    assert index.hashes_read - read_before == 3
    assert CountingClient.pages == 2

    # Everything already read costs nothing.
    assert await index.find(old[-2].sha256) is not None
    assert CountingClient.pages == 2


async def test_the_first_walk_resumes_from_its_persisted_cursor(
    files: FakePictrs, state: SqliteState
) -> None:
    base = time.time_ns() - 10 * 24 * 3600 * 10**9
    images = uploads(files, 14, 0, base)
    index = await index_for(files, state)
    assert await index.find(images[7].sha256) is not None  # newest first: 3 pages of 4
    assert CountingClient.pages == 2

    # A new process (a restart, the next `pictguard scan`) continues where that stopped.
    again = await index_for(files, state)
    assert await again.find(images[1].sha256) is not None
    assert CountingClient.pages == 3  # one catch-up page (nothing new) + 2 deeper pages
    assert again.hashes_read == 14
    assert await again.find("0" * 64) is None  # the walk is complete: nothing left to read
    assert CountingClient.pages == 4  # only the catch-up page


async def test_a_purged_cursor_hash_continues_by_upload_time(
    files: FakePictrs, state: SqliteState
) -> None:
    base = time.time_ns() - 10 * 24 * 3600 * 10**9
    images = uploads(files, 20, 0, base)
    index = await index_for(files, state)
    assert await index.find(images[11].sha256) is not None  # pages 19-16, 15-12, 11-8
    assert CountingClient.pages == 3
    # The next page would start at images[7]: purge it behind the index's back.
    client = PictrsClient(settings(files))
    try:
        assert await client.purge(images[7].aliases[0]) == images[7].aliases
    finally:
        await client.aclose()

    hit = await index.find(images[0].sha256)

    assert hit is not None and hit.hex == images[0].hash_hex
    # pict-rs answers an unknown slug from the top; the index notices and pages by upload
    # time from where it was (catch-up, the restarted page, 8-4, 3-0) instead of reading
    # everything above the cursor again.
    assert CountingClient.pages == 3 + 4
    rows = await state.fetchone("SELECT COUNT(*) FROM platform_pictrs_hashes")
    assert rows == (19,)


async def test_a_wrong_api_key_says_which_setting_to_fix(files: FakePictrs) -> None:
    client = PictrsClient(
        PictrsSettings(url=files.url, api_key="not-the-key", locations=["/srv/pictrs/files"])
    )
    try:
        with pytest.raises(PlatformError) as caught:
            await client.hashes(limit=5)
    finally:
        await client.aclose()
    assert "401" in str(caught.value) and "enforce.platform.pictrs.api_key" in str(caught.value)
    assert "not-the-key" not in str(caught.value)


async def test_purge_and_reimport_keep_the_hash_and_aliases(files: FakePictrs) -> None:
    image = seed_image(files, photo_jpeg(3, 320, 240), aliases=3, thumbnail=True)
    client = PictrsClient(settings(files))
    try:
        assert sorted(await client.purge(image.aliases[1]) or []) == sorted(image.aliases)
        assert files.stored_identifiers() == set()
        assert await client.purge(image.aliases[0]) is None  # gone: nothing twice
        for alias in image.aliases:
            assert (await client.import_alias(alias, image.data)).ok
        again = await client.import_alias(image.aliases[0], image.data)
    finally:
        await client.aclose()
    assert again.ok and again.detail == "alias exists already"
    assert sorted(files.aliases()) == sorted(image.aliases)
    assert files.hash_of(image.aliases[2]) == image.hash_hex
    assert len(files.stored_identifiers()) == 1
