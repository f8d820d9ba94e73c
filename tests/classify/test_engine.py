"""The engine end to end: bytes → assessment, with hash lists, cache and real NudeNet."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from classify.base import ClassifyTables
from classify.hashing import sha256_hex
from classify.hashlists import HashLists
from classify.settings import ClassifySettings
from pipeline.events import Decision, ErrorReason, Lane
from tests.classify import images
from tests.classify.helpers import EngineFactory
from tests.colour_model import ColourModel  # noqa: F401 — registers the "colour" classifier

HASH_AND_NUDENET = ["hashlist", "nudenet"]


def solid(
    colour: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (64, 64)
) -> bytes:
    return images.encode(Image.new("RGB", size, colour), fmt)


def resized_copy(data: bytes, size: tuple[int, int], quality: int = 70) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize(size)
    return images.encode(image, "JPEG", quality=quality)


@pytest.mark.asyncio
async def test_errors_carry_reason_and_sha(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["hashlist"])
    empty = await engine.evaluate(b"")
    assert (empty.decision, empty.reason) == (Decision.ERROR, ErrorReason.EMPTY)
    pdf = await engine.evaluate(images.PDF, content_type="application/pdf")
    assert pdf.reason is ErrorReason.UNSUPPORTED_TYPE and "application/pdf" in (pdf.detail or "")
    assert pdf.sha256 == sha256_hex(images.PDF)
    truncated = await engine.evaluate(images.jpeg()[:2000])
    assert truncated.reason is ErrorReason.UNDECODABLE
    bomb = await engine.evaluate(images.png_header_only(100_000, 100_000))
    assert bomb.reason is ErrorReason.TOO_LARGE


@pytest.mark.asyncio
async def test_object_size_limit(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["hashlist"], max_object_bytes=1000)
    result = await engine.evaluate(images.jpeg())
    assert result.reason is ErrorReason.OBJECT_TOO_BIG


@pytest.mark.asyncio
async def test_clean_image_gets_hashes_and_nudenet_scores(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    data = images.jpeg(1)
    result = await engine.evaluate(data)
    assert result.decision is Decision.ALLOW
    assert result.sha256 == sha256_hex(data)
    assert result.pdq is not None and result.pdq_quality is not None
    assert "nudenet:nsfw" in result.scores
    assert result.classifiers == ["hashlist", "nudenet"]
    assert result.model_version.startswith("nudenet:320n@")
    assert {"decode", "model:nudenet", "total"} <= set(result.timings_ms)


@pytest.mark.asyncio
async def test_blocklisted_image_matches_resized_copy(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    original = images.jpeg(31, size=(800, 600))
    lists = HashLists(tables.hashlists)
    hashes_of = await engine.evaluate(original)
    await lists.add(sha256=hashes_of.sha256, pdq=hashes_of.pdq, reason="known", author="t")

    exact = await engine.evaluate(original)
    assert (exact.decision, exact.matched) == (Decision.FLAG_CSAM, "blocklist:sha256")
    assert exact.detail == "known"

    copy = await engine.evaluate(resized_copy(original, (512, 384)))
    assert copy.decision is Decision.FLAG_CSAM
    assert copy.matched is not None and copy.matched.startswith("blocklist:pdq:")
    assert int(copy.matched.rsplit(":", 1)[1]) <= 31

    unrelated = await engine.evaluate(images.jpeg(32, size=(800, 600)))
    assert unrelated.decision is Decision.ALLOW and unrelated.matched is None


@pytest.mark.asyncio
async def test_nsfw_category_entry_flags_nsfw(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(classifiers=["hashlist"])
    data = images.jpeg(33)
    await HashLists(tables.hashlists).add(sha256=sha256_hex(data), category="nsfw")
    assert (await engine.evaluate(data)).decision is Decision.FLAG_NSFW


@pytest.mark.asyncio
async def test_allowlist_overrides_blocklist(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    original = images.jpeg(34, size=(800, 600))
    copy = resized_copy(original, (640, 480), quality=80)
    first = await engine.evaluate(original)
    second = await engine.evaluate(copy)
    lists = HashLists(tables.hashlists)
    await lists.add(sha256=first.sha256, pdq=first.pdq, list="block", reason="known bad")
    await lists.add(sha256=second.sha256, pdq=second.pdq, list="allow", reason="reviewed")
    result = await engine.evaluate(copy)
    assert (result.decision, result.matched) == (Decision.ALLOW, "allowlist:sha256")
    # A third variant is PDQ-near both entries: the allowlist still wins.
    third = await engine.evaluate(resized_copy(original, (700, 525), quality=60))
    assert third.decision is Decision.ALLOW
    assert third.matched is not None and third.matched.startswith("allowlist:pdq:")


@pytest.mark.asyncio
async def test_duplicate_costs_no_model_run(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    data = images.jpeg(40)
    first = await engine.evaluate(data)
    calls = engine.batchers["nudenet"].stats.calls
    again = await engine.evaluate(data)
    assert engine.batchers["nudenet"].stats.calls == calls
    assert again.cached and not first.cached
    assert (again.decision, again.scores, again.pdq) == (first.decision, first.scores, first.pdq)


@pytest.mark.asyncio
async def test_identical_images_in_flight_share_one_run(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    data = images.jpeg(41)
    results = await asyncio.gather(*(engine.evaluate(data) for _ in range(5)))
    assert engine.batchers["nudenet"].stats.items == 1
    assert sum(not r.cached for r in results) == 1


@pytest.mark.asyncio
async def test_cache_is_per_model_version(make_engine: EngineFactory) -> None:
    data = images.jpeg(42)
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    await engine.evaluate(data)
    other = await make_engine(classifiers=HASH_AND_NUDENET, policy={"nudenet_nsfw_threshold": 0.9})
    assert other.policy_version != engine.policy_version
    assert not (await other.evaluate(data)).cached


@pytest.mark.asyncio
async def test_errors_are_not_cached(make_engine: EngineFactory, tables: ClassifyTables) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    await engine.evaluate(images.jpeg()[:2000])
    assert [key async for key, _ in tables.verdict_cache.items()] == []


@pytest.mark.asyncio
async def test_lookup_fast(make_engine: EngineFactory, tables: ClassifyTables) -> None:
    engine = await make_engine(classifiers=HASH_AND_NUDENET)
    known = images.jpeg(50, size=(800, 600))
    fresh = images.jpeg(51)
    probe = await engine.evaluate(known)
    await HashLists(tables.hashlists).add(sha256=probe.sha256, pdq=probe.pdq, reason="known")
    calls = engine.batchers["nudenet"].stats.calls
    assert (await engine.lookup_fast(known)).decision is Decision.FLAG_CSAM  # type: ignore[union-attr]
    near = await engine.lookup_fast(resized_copy(known, (600, 450)))
    assert near is not None and near.decision is Decision.FLAG_CSAM
    assert await engine.lookup_fast(fresh) is None
    await engine.evaluate(fresh)
    cached = await engine.lookup_fast(fresh)
    assert cached is not None and cached.cached
    empty = await engine.lookup_fast(b"")
    assert empty is not None and empty.reason is ErrorReason.EMPTY
    assert engine.batchers["nudenet"].stats.calls == calls + 1  # only the evaluate ran a model


@pytest.mark.asyncio
async def test_a_hashlist_only_verdict_is_cached_and_a_later_list_entry_still_wins(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    """Without models the verdict is cached too (model version "none"): the same image
    again costs its sha256 and the lookups, no decode. A PDQ-near block entry added after
    the verdict was cached still catches the image: the cached PDQ is checked again."""
    engine = await make_engine(classifiers=["hashlist"])
    data = images.jpeg(60, size=(800, 600))
    first = await engine.evaluate(data)
    assert first.decision is Decision.ALLOW and not first.cached
    assert first.model_version == "none"
    again = await engine.evaluate(data)
    assert again.cached and again.pdq == first.pdq
    assert "decode" not in again.timings_ms and "sha256" in again.timings_ms
    await engine.cache.drain()
    assert [key async for key, _ in tables.verdict_cache.items()] == [first.sha256]

    copy = resized_copy(data, (640, 480))
    probe = await engine.evaluate(copy)
    engine._lists_changed_at = 0.0  # settled long ago; the entry below marks them changed
    await HashLists(tables.hashlists).add(sha256=probe.sha256, pdq=probe.pdq, reason="near")
    caught = await engine.evaluate(data)
    assert caught.decision is Decision.FLAG_CSAM and not caught.cached
    assert caught.matched is not None and caught.matched.startswith("blocklist:pdq:")


@pytest.mark.asyncio
async def test_a_verdict_made_after_the_lists_settled_is_not_checked_again(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(classifiers=["hashlist"])
    data = images.jpeg(61, size=(800, 600))
    searched: list[object] = []
    search = engine._search_pdq

    async def counting(query: tuple[str | None, int | None], lane: Lane) -> object:
        searched.append(query)
        return await search(query, lane)

    monkeypatch.setattr(engine, "_search_pdq", counting)
    await engine.evaluate(data)
    engine._lists_changed_at = 0.0  # the lists last changed long before this verdict
    assert (await engine.evaluate(data)).cached and searched == []
    engine._lists_changed_at = time.time()  # they changed just now: check again
    assert (await engine.evaluate(data)).cached and len(searched) == 1


@pytest.mark.asyncio
async def test_lookup_fast_without_pdq_does_not_decode(
    make_engine: EngineFactory, tables: ClassifyTables
) -> None:
    """``pdq=False``: the caller evaluates a miss in the same engine, which checks PDQ
    itself, so the fast path decodes nothing (one decode per upload, not two)."""
    engine = await make_engine(classifiers=["hashlist", "colour"])
    known = images.jpeg(62, size=(800, 600))
    probe = await engine.evaluate(known)
    await HashLists(tables.hashlists).add(sha256=probe.sha256, pdq=probe.pdq, reason="known")
    copy = resized_copy(known, (600, 450))
    timings: dict[str, float] = {}
    assert await engine.lookup_fast(copy, pdq=False, timings=timings) is None
    assert "decode" not in timings and "sha256" in timings
    near = await engine.lookup_fast(copy)
    assert near is not None and near.decision is Decision.FLAG_CSAM


@pytest.mark.asyncio
async def test_policy_through_a_test_model(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["hashlist", "colour"])
    red = await engine.evaluate(solid((250, 0, 0)))
    assert red.decision is Decision.FLAG_NSFW and red.labels == ["sexual"]
    magenta = await engine.evaluate(solid((250, 0, 250)))
    assert magenta.decision is Decision.FLAG_CSAM
    blue = await engine.evaluate(solid((0, 0, 250)))
    assert blue.decision is Decision.ALLOW


@pytest.mark.asyncio
async def test_worst_frame_of_an_animation_decides(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["colour"], max_frames=4)
    frames = [Image.new("RGB", (32, 32), (40, 40, 40)) for _ in range(9)]
    frames[8] = Image.new("RGB", (32, 32), (250, 0, 250))  # the last frame, always sampled
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=20)
    result = await engine.evaluate(out.getvalue())
    assert result.decision is Decision.FLAG_CSAM


@pytest.mark.asyncio
async def test_bad_image_does_not_fail_its_batch_mates(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["colour"], max_batch=8, max_wait_ms=200)
    inputs = [solid((0, 250, 0)), solid((250, 0, 0)), solid((10, 10, 10)), images.PDF]
    results = await asyncio.gather(*(engine.evaluate(d, lane=Lane.SYNC) for d in inputs))
    assert [r.decision for r in results] == [
        Decision.ERROR,
        Decision.FLAG_NSFW,
        Decision.ALLOW,
        Decision.ERROR,
    ]
    assert results[0].reason is ErrorReason.MODEL_FAILED
    assert results[0].sha256 == sha256_hex(inputs[0])
    assert results[3].reason is ErrorReason.UNSUPPORTED_TYPE


@pytest.mark.asyncio
async def test_large_lists_are_matched_in_batches(
    make_engine: EngineFactory, tables: ClassifyTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("classify.engine._INLINE_PDQ_ENTRIES", 0)
    engine = await make_engine(classifiers=["hashlist"])
    originals = [images.jpeg(80 + i, size=(800, 600)) for i in range(3)]
    probes = [await engine.evaluate(data) for data in originals]
    lists = HashLists(tables.hashlists)
    for probe in probes:
        await lists.add(sha256=probe.sha256, pdq=probe.pdq, reason="known")
    copies = [resized_copy(data, (640, 480)) for data in originals]
    results = await asyncio.gather(*(engine.evaluate(c) for c in [*copies, images.jpeg(90)]))
    assert [r.decision for r in results] == [Decision.FLAG_CSAM] * 3 + [Decision.ALLOW]
    assert engine._pdq_batcher.stats.calls >= 1


@pytest.mark.asyncio
async def test_process_decode_pool(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["hashlist", "colour"], decode_pool="process")
    results = await asyncio.gather(
        engine.evaluate(solid((250, 0, 0))), engine.evaluate(images.jpeg()[:1500])
    )
    assert results[0].decision is Decision.FLAG_NSFW
    assert results[1].reason is ErrorReason.UNDECODABLE


@pytest.mark.asyncio
async def test_cancelled_duplicate_does_not_fail_the_other(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["colour"], max_batch=64, max_wait_ms=300)
    data = solid((250, 0, 0))
    first = asyncio.create_task(engine.evaluate(data))
    await asyncio.sleep(0.05)  # first is decoded and waiting for its batch
    second = asyncio.create_task(engine.evaluate(data))
    await asyncio.sleep(0.01)
    first.cancel()
    result = await asyncio.wait_for(second, timeout=10)
    assert result.decision is Decision.FLAG_NSFW and not result.cached


@pytest.mark.asyncio
async def test_sync_request_does_not_wait_on_a_bulk_duplicate(make_engine: EngineFactory) -> None:
    engine = await make_engine(classifiers=["colour"], max_batch=64, max_wait_ms=100)
    data = solid((250, 0, 250))
    bulk = asyncio.create_task(engine.evaluate(data, lane=Lane.BULK))
    await asyncio.sleep(0.02)
    sync = await engine.evaluate(data, lane=Lane.SYNC)
    assert sync.decision is Decision.FLAG_CSAM and not sync.cached
    assert (await bulk).decision is Decision.FLAG_CSAM


async def test_a_model_whose_packages_are_missing_is_skipped_with_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`pip install .` without the clip extra: start anyway, say what to install."""
    import sys

    from classify import registry
    from classify.engine import ClassifyEngine
    from pipeline.state.memory import MemoryTable

    saved = {k: sys.modules.get(k) for k in ("open_clip", "classify.models.clip")}
    registry._MODELS.pop("clip", None)
    sys.modules["open_clip"] = None  # type: ignore[assignment]  # import now fails
    sys.modules.pop("classify.models.clip", None)
    try:
        engine = ClassifyEngine(
            ClassifySettings(classifiers=["hashlist", "clip"]),
            ClassifyTables(MemoryTable("h"), MemoryTable("c")),
        )
        with caplog.at_level("WARNING"):
            await engine.start()
        assert engine.classifiers_loaded == ["hashlist"]
        assert "pictguard[clip]" in caplog.text and "CSAM detection needs" in caplog.text
        info = registry.describe("clip", ClassifySettings())
        assert not info.present and "not installed" in info.source
        await engine.stop()
    finally:
        registry._MODELS.pop("clip", None)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
