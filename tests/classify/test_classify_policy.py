"""Policy rules and classify settings parsing."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from classify.policy import Judgement, Policy
from classify.registry import ModelOutput
from classify.settings import ClassifySettings, PolicySettings
from pipeline.events import Decision


def out(*categories: str, **scores: float) -> ModelOutput:
    return ModelOutput(dict(scores), [f"x:{c}" for c in categories], frozenset(categories))


@pytest.mark.parametrize(
    ("categories", "decision"),
    [
        ((), Decision.ALLOW),
        (("underage",), Decision.ALLOW),
        (("drawn",), Decision.ALLOW),
        (("nsfw",), Decision.FLAG_NSFW),
        (("sexual",), Decision.FLAG_NSFW),
        (("underage", "nsfw"), Decision.FLAG_NSFW),
        (("underage", "sexual"), Decision.FLAG_CSAM),
        (("csam",), Decision.FLAG_CSAM),
        (("underage", "sexual", "drawn"), Decision.FLAG_CSAM),
    ],
)
def test_rules(categories: tuple[str, ...], decision: Decision) -> None:
    assert Policy(PolicySettings()).decide_frame([out(*categories)]).decision is decision


def test_categories_combine_across_models() -> None:
    judgement = Policy(PolicySettings()).decide_frame([out("underage"), out("sexual")])
    assert judgement.decision is Decision.FLAG_CSAM


def test_instance_choices() -> None:
    lenient = Policy(PolicySettings(drawn_underage_as="flag_nsfw", flag_nsfw=False))
    assert lenient.decide_frame([out("underage", "sexual", "drawn")]).decision is (
        Decision.FLAG_NSFW
    )
    assert lenient.decide_frame([out("nsfw")]).decision is Decision.ALLOW
    assert lenient.version != Policy(PolicySettings()).version


def test_worst_frame_wins_and_scores_take_the_maximum() -> None:
    frames = [
        Judgement(Decision.ALLOW, {"a": 0.9, "b": 0.1}, ["l1"]),
        Judgement(Decision.FLAG_CSAM, {"a": 0.2, "b": 0.5}, ["l2", "l1"]),
        Judgement(Decision.FLAG_NSFW, {"a": 0.3}, ["l3"]),
    ]
    worst = Policy.worst(frames)
    assert worst.decision is Decision.FLAG_CSAM
    assert worst.scores == {"a": 0.9, "b": 0.5}
    assert worst.labels == ["l1", "l2", "l3"]


def test_classifiers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Root(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="PICTGUARD_", env_nested_delimiter="__")
        classify: ClassifySettings = ClassifySettings()

    monkeypatch.setenv("PICTGUARD_CLASSIFY__CLASSIFIERS", "hashlist, nudenet")
    monkeypatch.setenv("PICTGUARD_CLASSIFY__MAX_BATCH", "64")
    monkeypatch.setenv("PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH", "/models/clip.pt")
    settings = Root().classify
    assert settings.classifiers == ["hashlist", "nudenet"]
    assert settings.max_batch == 64
    assert str(settings.clip.checkpoint_path) == "/models/clip.pt"
    assert ClassifySettings(classifiers='["clip"]').classifiers == ["clip"]  # type: ignore[arg-type]
