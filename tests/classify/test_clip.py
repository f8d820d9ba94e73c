"""CLIP through the engine with a tiny registered open_clip config and random weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from classify.concepts import load_concepts
from classify.models.clip import ClipModel, Head
from classify.settings import ClassifySettings, ClipSettings
from pipeline.events import Decision
from tests.classify import images
from tests.classify.helpers import EngineFactory

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "pg-tiny-test.json"  # open_clip names the model after the file
    path.write_text(json.dumps(TINY))
    return path


def clip_settings(tiny_config: Path, **clip: object) -> ClassifySettings:
    fields: dict[str, object] = {
        "model": "pg-tiny-test",
        "pretrained": None,
        "model_config_path": tiny_config,
        "allow_random_weights": True,
        **clip,
    }
    return ClassifySettings(
        classifiers=["hashlist", "clip"], clip=ClipSettings.model_validate(fields)
    )


def inputs(n: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.asyncio
async def test_clip_runs_in_the_engine(make_engine: EngineFactory, tiny_config: Path) -> None:
    engine = await make_engine(clip_settings(tiny_config))
    assert engine.classifiers_loaded == ["hashlist", "clip"]
    result = await engine.evaluate(images.jpeg(60))
    assert result.decision in (Decision.ALLOW, Decision.FLAG_NSFW, Decision.FLAG_CSAM)
    assert {"clip:underage", "clip:sexual", "clip:nsfw", "clip:drawn"} <= set(result.scores)
    assert result.model_version == "clip:pg-tiny-test@random-seed0"
    assert "model:clip" in result.timings_ms


def test_checkpoint_round_trip(tiny_config: Path, tmp_path: Path) -> None:
    random_model = ClipModel(clip_settings(tiny_config))
    random_model.load()
    assert random_model.model is not None
    checkpoint = tmp_path / "tiny.pt"
    torch.save(random_model.model.state_dict(), checkpoint)

    loaded = ClipModel(
        clip_settings(tiny_config, checkpoint_path=checkpoint, allow_random_weights=False)
    )
    loaded.load()
    batch = inputs(3)
    assert torch.allclose(random_model.embed(batch), loaded.embed(batch), atol=1e-6)
    assert loaded.weights is not None and loaded.weights.source == "checkpoint_path"
    assert loaded.version.startswith("clip:pg-tiny-test@") and "random" not in loaded.version


@pytest.mark.asyncio
async def test_missing_weights_do_not_stop_the_engine(
    make_engine: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = ClassifySettings(
        classifiers=["hashlist", "nudenet", "clip"],
        clip=ClipSettings(cache_dir=tmp_path / "hf-empty"),
    )
    engine = await make_engine(settings)
    for seed in range(3):
        result = await engine.evaluate(images.jpeg(seed))
        assert result.decision is Decision.ALLOW and result.classifiers == ["hashlist", "nudenet"]
    warnings = [
        r for r in caplog.records if "CSAM detection needs the CLIP model" in r.getMessage()
    ]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH" in message and "hf download" in message
    assert "clip" in engine.missing


@pytest.mark.asyncio
async def test_concept_policy_decides_csam(
    make_engine: EngineFactory, tiny_config: Path, tmp_path: Path
) -> None:
    # Thresholds of -1 make every concept fire: underage AND sexual → flag_csam.
    policy = tmp_path / "always.yaml"
    policy.write_text(
        "categories:\n"
        "  underage: [{prompt: 'a child', threshold: -1}]\n"
        "  sexual: [{prompt: 'nudity', threshold: -1}]\n"
    )
    engine = await make_engine(clip_settings(tiny_config, policy_path=policy))
    result = await engine.evaluate(images.jpeg(61))
    assert result.decision is Decision.FLAG_CSAM
    assert result.labels == ["clip:underage:a child", "clip:sexual:nudity"]


@pytest.mark.asyncio
async def test_head_on_the_embedding(
    make_engine: EngineFactory, tiny_config: Path, tmp_path: Path
) -> None:
    head = Head(TINY["embed_dim"], ["nsfw"], hidden=8)  # type: ignore[arg-type]
    with torch.no_grad():
        head.net[2].bias.fill_(10.0)  # type: ignore[index]
    head_path = tmp_path / "head.pt"
    head.save(head_path)
    engine = await make_engine(clip_settings(tiny_config, head_path=head_path))
    result = await engine.evaluate(images.jpeg(62))
    assert result.scores["clip-head:nsfw"] > 0.99
    assert "clip-head:nsfw" in result.labels
    assert result.decision in (Decision.FLAG_NSFW, Decision.FLAG_CSAM)


def test_drawn_context_raises_thresholds() -> None:
    policy = load_concepts()
    columns = {c.prompt: i for i, c in enumerate(policy.concepts)}
    row = np.zeros((1, len(policy.concepts)), dtype=np.float32)
    row[0, columns["a photo of a child"]] = 0.23  # above 0.215, below the drawn 0.25
    photo = policy.score(row)[0]
    assert "underage" in photo.categories
    row[0, columns["an anime drawing"]] = 0.30
    drawn = policy.score(row)[0]
    assert drawn.categories == {"drawn"}
    assert drawn.scores["clip:underage"] == pytest.approx(0.23)


def test_default_policy_file() -> None:
    policy = load_concepts()
    assert {"underage", "sexual", "nsfw", "drawn"} == set(policy.categories)
    for concept in policy.concepts:
        assert 0.19 <= concept.threshold <= 0.26
