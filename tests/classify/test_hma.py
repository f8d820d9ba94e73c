"""The ``hma`` matcher against FakeHMA (HMA 2.0's lookup API) over real HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from PIL import Image
from pydantic import SecretStr

from classify.registry import describe
from classify.settings import ClassifySettings, HmaSettings
from pipeline.events import Decision, ErrorReason
from tests.classify import images
from tests.classify.helpers import EngineFactory
from tests.classify.hma_servers import TokenHMA, refused_url, silent_server
from tests.colour_model import ColourModel  # noqa: F401 — registers the "colour" classifier
from tests.fakes import FakeHMA
from tests.media import near_duplicates, photo_jpeg, screenshot_png

PHOTO = photo_jpeg(4100, 800, 600)
OTHER = photo_jpeg(4101, 800, 600)


@pytest.fixture
def hma() -> Iterator[FakeHMA]:
    with FakeHMA() as fake:
        fake.add_bank("NCMEC_CSAM")
        fake.add_bank("STOPNCII")
        yield fake


def settings(url: str, **hma: object) -> ClassifySettings:
    return ClassifySettings(
        classifiers=["hashlist", "hma"],
        hma=HmaSettings(url=url, **hma),  # type: ignore[arg-type]
    )


async def test_a_banked_image_and_its_near_duplicates_are_flagged_with_provenance(
    hma: FakeHMA, make_engine: EngineFactory
) -> None:
    content = hma.add_image("NCMEC_CSAM", PHOTO)
    engine = await make_engine(settings(hma.url))
    assert "hma" in engine.classifiers_loaded

    flagged = await engine.evaluate(PHOTO)
    assert flagged.decision is Decision.FLAG_CSAM
    assert flagged.matched is not None
    assert flagged.matched.startswith("hma:pdq:")
    assert flagged.matched.endswith(f"(bank: NCMEC_CSAM, content: {content})")
    assert "hma:bank:NCMEC_CSAM" in flagged.labels and not flagged.cached
    for name, copy in near_duplicates(PHOTO, seed=3).items():
        verdict = await engine.evaluate(copy)
        assert verdict.decision is Decision.FLAG_CSAM, name

    clean = await engine.evaluate(OTHER)
    assert clean.decision is Decision.ALLOW and clean.matched is None
    assert "hma" in clean.classifiers and not clean.labels


async def test_bank_categories_filters_and_roll_out(
    hma: FakeHMA, make_engine: EngineFactory
) -> None:
    hma.add_image("STOPNCII", PHOTO)
    nsfw = await make_engine(settings(hma.url, categories={"STOPNCII": "nsfw"}))
    verdict = await nsfw.evaluate(PHOTO)
    assert verdict.decision is Decision.FLAG_NSFW and "bank: STOPNCII" in (verdict.matched or "")

    # Only the banks named are asked about.
    only_ncmec = await make_engine(settings(hma.url, banks=["NCMEC_CSAM"]))
    assert (await only_ncmec.evaluate(PHOTO)).decision is Decision.ALLOW

    # A bank switched off in HMA (matching_enabled_ratio 0) does not match, as in HMA.
    hma.add_bank("PAUSED", matching_enabled_ratio=0.0)
    hma.add_image("PAUSED", OTHER)
    everything = await make_engine(settings(hma.url))
    assert (await everything.evaluate(OTHER)).decision is Decision.ALLOW


async def test_md5_lookup_catches_an_image_without_a_usable_pdq(
    hma: FakeHMA, make_engine: EngineFactory
) -> None:
    # A flat screenshot: PDQ quality below 50, so HMA's hasher gives no PDQ and pictguard
    # does not ask about one; the MD5 of its bytes (HMA's video_md5) still matches.
    flat = screenshot_png(5, 8, 8)
    content = hma.add_signal("NCMEC_CSAM", "video_md5", hashlib.md5(flat).hexdigest())
    pdq_only = await make_engine(settings(hma.url))
    assert (await pdq_only.evaluate(flat)).decision is Decision.ALLOW
    both = await make_engine(settings(hma.url, signal_types=["pdq", "video_md5"]))
    verdict = await both.evaluate(flat)
    assert verdict.decision is Decision.FLAG_CSAM
    assert verdict.matched == f"hma:video_md5 (bank: NCMEC_CSAM, content: {content})"


async def test_no_answer_in_time_is_never_clean(make_engine: EngineFactory) -> None:
    with silent_server() as url:
        strict = await make_engine(settings(url, timeout_s=0.3))
        verdict = await strict.evaluate(OTHER)
        assert verdict.decision is Decision.ERROR and verdict.reason is ErrorReason.TIMEOUT
        assert "no answer within 0.3 s" in (verdict.detail or "")

        lenient = await make_engine(settings(url, timeout_s=0.3, on_unavailable="models"))
        verdict = await lenient.evaluate(OTHER)
        assert verdict.decision is Decision.ALLOW
        assert "hma:unavailable" in verdict.labels and "hma timeout" in (verdict.detail or "")


async def test_unreachable_or_unready_hma_is_recorded(make_engine: EngineFactory) -> None:
    down = await make_engine(settings(refused_url(), timeout_s=2))
    verdict = await down.evaluate(OTHER)
    assert verdict.decision is Decision.ERROR and verdict.reason is ErrorReason.MODEL_FAILED
    assert "hma unreachable" in (verdict.detail or "")

    with FakeHMA(auto_index=False) as unready:  # 503 "index not yet ready" until built
        unready.add_bank("NCMEC_CSAM")
        unready.add_image("NCMEC_CSAM", PHOTO)
        engine = await make_engine(settings(unready.url))
        verdict = await engine.evaluate(PHOTO)
        assert verdict.decision is Decision.ERROR
        assert "503" in (verdict.detail or "") and "index not yet ready" in (verdict.detail or "")
        unready.build_index()
        assert (await engine.evaluate(PHOTO)).decision is Decision.FLAG_CSAM


async def test_token_goes_in_the_configured_header(
    make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with TokenHMA("X-Api-Key", "s3cret-token") as hma:
        hma.add_bank("NCMEC_CSAM")
        hma.add_image("NCMEC_CSAM", PHOTO)
        without = await make_engine(settings(hma.url))
        verdict = await without.evaluate(PHOTO)
        assert verdict.decision is Decision.ERROR and "401" in (verdict.detail or "")
        with_token = await make_engine(
            settings(hma.url, auth_header="X-Api-Key", token=SecretStr("s3cret-token"))
        )
        assert (await with_token.evaluate(PHOTO)).decision is Decision.FLAG_CSAM
        assert hma.refused == 1
    assert "s3cret-token" not in caplog.text


async def test_models_run_while_hma_is_asked_and_a_model_flag_stands(
    hma: FakeHMA, make_engine: EngineFactory
) -> None:
    hma.add_image("NCMEC_CSAM", PHOTO)
    magenta = images.encode(Image.new("RGB", (64, 64), (255, 0, 255)), "PNG")  # colour: CSAM
    grey = images.encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG")  # colour: allow
    both = await make_engine(
        ClassifySettings(classifiers=["hashlist", "colour", "hma"], hma=HmaSettings(url=hma.url))
    )
    matched = await both.evaluate(PHOTO)
    assert matched.decision is Decision.FLAG_CSAM and (matched.matched or "").startswith("hma:")
    assert set(matched.classifiers) == {"hashlist", "colour", "hma"}
    assert "model:colour" in matched.timings_ms and "matchers" in matched.timings_ms

    with silent_server() as url:  # asked about every image: video_md5 needs no PDQ
        down = HmaSettings(url=url, timeout_s=0.3, signal_types=["video_md5"])
        engine = await make_engine(
            ClassifySettings(classifiers=["hashlist", "colour", "hma"], hma=down)
        )
        flagged = await engine.evaluate(magenta)
        assert flagged.decision is Decision.FLAG_CSAM and "hma:unavailable" in flagged.labels
        unknown = await engine.evaluate(grey)
        assert unknown.decision is Decision.ERROR and unknown.reason is ErrorReason.TIMEOUT
        # A verdict HMA did not answer for is not cached: the next sighting asks again.
        lenient = await make_engine(
            ClassifySettings(
                classifiers=["hashlist", "colour", "hma"],
                hma=down.model_copy(update={"on_unavailable": "models"}),
            )
        )
        for _ in range(2):
            again = await lenient.evaluate(grey)
            assert again.decision is Decision.ALLOW and not again.cached
            assert "hma:unavailable" in again.labels
    # HMA answering "no match": the models' verdict is cached as usual.
    await both.evaluate(grey)
    assert (await both.evaluate(grey)).cached


def test_models_says_what_hma_needs() -> None:
    missing = describe("hma", ClassifySettings(classifiers=["hma"]))
    assert not missing.present and "PICTGUARD_CLASSIFY__HMA__URL" in missing.detail
    there = describe("hma", settings("http://hma:5000"))
    assert there.present and there.location == "http://hma:5000"
