"""NudeNet: the real bundled model on generated images, and its output decoding."""

from __future__ import annotations

import numpy as np
import pytest

from classify.models.nudenet import LABELS, NudenetModel
from classify.preprocess import Letterbox
from classify.settings import ClassifySettings, PolicySettings
from tests.classify import images


@pytest.fixture(scope="module")
def model() -> NudenetModel:
    nudenet = NudenetModel(ClassifySettings())
    nudenet.load()
    return nudenet


def test_batch_equals_one_by_one(model: NudenetModel) -> None:
    letterbox = Letterbox(320)
    batch = [letterbox(images.scene(seed, (300 + 40 * seed, 240))) for seed in range(4)]
    together = model.predict(batch)
    alone = [model.predict([item])[0] for item in batch]
    assert len(together) == 4
    for a, b in zip(together, alone, strict=True):
        assert a.scores["nudenet:nsfw"] == pytest.approx(b.scores["nudenet:nsfw"], abs=1e-3)
        assert 0.0 <= a.scores["nudenet:nsfw"] <= 1.0
    assert model.version.startswith("nudenet:320n@")


def _raw(detections: list[tuple[str, float, tuple[float, float, float, float]]]) -> np.ndarray:
    """A fake model output (22 × 2100) holding the given detections."""
    raw = np.zeros((4 + len(LABELS), 2100), dtype=np.float32)
    for anchor, (label, score, box) in enumerate(detections):
        raw[:4, anchor] = box
        raw[4 + LABELS.index(label), anchor] = score
    return raw


def test_decoding_exposed_and_covered_labels(model: NudenetModel) -> None:
    out = model._decode(
        _raw(
            [
                ("FEMALE_BREAST_EXPOSED", 0.82, (100, 100, 40, 40)),
                ("FEMALE_BREAST_EXPOSED", 0.60, (102, 101, 40, 40)),  # suppressed by NMS
                ("FACE_FEMALE", 0.95, (200, 60, 50, 50)),  # not sexual
                ("BELLY_EXPOSED", 0.90, (150, 200, 60, 40)),  # not sexual
            ]
        )
    )
    assert out.scores["nudenet:nsfw"] == pytest.approx(0.82, abs=1e-4)
    assert out.labels == ["nudenet:FEMALE_BREAST_EXPOSED"]
    assert out.categories == {"nsfw", "sexual"}


def test_low_confidence_is_not_nsfw(model: NudenetModel) -> None:
    out = model._decode(_raw([("BUTTOCKS_EXPOSED", 0.3, (50, 50, 30, 30))]))
    assert out.scores["nudenet:nsfw"] == pytest.approx(0.3, abs=1e-4)
    assert out.labels == [] and out.categories == frozenset()


def test_nudenet_sexual_signal_can_be_turned_off() -> None:
    settings = ClassifySettings(policy=PolicySettings(nudenet_counts_as_sexual=False))
    nudenet = NudenetModel(settings)
    out = nudenet._decode(_raw([("ANUS_EXPOSED", 0.9, (50, 50, 30, 30))]))
    assert out.categories == {"nsfw"}
