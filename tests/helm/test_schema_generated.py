"""The `config` part of values.schema.json is generated from the settings model and kept in
step with it: unknown settings fail `helm template` instead of crash-looping the pods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pictguard.settings import Settings
from tests.helm.chart import (
    BROKERS,
    CHART_DIR,
    helm_binary,
    helm_output,
    load_schema_generator,
    merge,
)

gen = load_schema_generator()


def test_the_committed_schema_is_what_the_generator_writes() -> None:
    committed = (CHART_DIR / "values.schema.json").read_text()
    assert gen.render(gen.generate(json.loads(committed))) == committed, (
        "values.schema.json is out of date: run .venv/bin/python docs/gen_helm_schema.py"
    )


def test_the_generator_reads_the_combined_settings_model() -> None:
    assert gen.Settings is Settings


def test_every_settings_section_is_in_the_schema_and_closed() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert set(config["properties"]) == set(Settings.model_fields)
    assert config["additionalProperties"] is False
    assert config["properties"]["enforce"]["properties"]["guard"]["additionalProperties"] is False


def test_a_new_secret_setting_needs_a_place_in_the_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    class Enforce(Settings.model_fields["enforce"].annotation):  # type: ignore[misc,name-defined]
        model_config = ConfigDict(extra="forbid")
        pagerduty_key: SecretStr | None = Field(None)

    class WithNewSecret(Settings):
        enforce: Enforce = Field(default_factory=Enforce)

    monkeypatch.setattr(gen, "Settings", WithNewSecret)
    current = json.loads((CHART_DIR / "values.schema.json").read_text())
    with pytest.raises(gen.GeneratorError, match=r"enforce\.pagerduty_key"):
        gen.generate(current)


def test_a_section_that_accepts_unknown_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Loose(BaseModel):
        anything: int = 1

    class WithLooseSection(Settings):
        loose: Loose = Field(default_factory=Loose)

    monkeypatch.setattr(gen, "Settings", WithLooseSection)
    with pytest.raises(gen.GeneratorError, match=r"config\.loose accepts unknown keys"):
        gen.settings_schema()


@pytest.mark.skipif(helm_binary() is None, reason="no helm binary")
def test_a_misspelt_setting_fails_the_render(tmp_path: Path) -> None:
    # config.enforce.dryrun used to render, and pictguard then refused it at start-up.
    done = helm_output(merge(BROKERS, {"config": {"enforce": {"dryrun": True}}}), tmp_path)
    assert done.returncode != 0
    assert "/config/enforce" in done.stderr
    assert "dryrun" in done.stderr
    ok = helm_output(merge(BROKERS, {"config": {"enforce": {"dry_run": True}}}), tmp_path)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.skipif(helm_binary() is None, reason="no helm binary")
def test_a_secret_in_config_fails_the_render_and_names_its_place(tmp_path: Path) -> None:
    done = helm_output(
        merge(BROKERS, {"config": {"ingest": {"webhook": {"minio_token": "x"}}}}), tmp_path
    )
    assert done.returncode != 0
    assert "/config/ingest/webhook/minio_token" in done.stderr
