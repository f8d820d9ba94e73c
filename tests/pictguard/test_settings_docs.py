"""Every setting is documented on its field, and docs/configuration.md is generated from them."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from pictguard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def undocumented(model: type[BaseModel], path: str = "") -> list[str]:
    """Dotted paths of leaf settings whose Field has no description."""
    missing: list[str] = []
    for name, info in model.model_fields.items():
        where = f"{path}.{name}" if path else name
        nested = _models(info.annotation)
        if nested:
            for sub in nested:
                missing += undocumented(sub, where)
        elif not info.description:
            missing.append(f"{where} ({model.__name__})")
    return missing


def test_every_setting_has_a_description() -> None:
    assert undocumented(Settings) == []


def test_configuration_reference_is_generated_from_the_settings() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_config.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert generated == committed, (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python docs/gen_config.py > docs/configuration.md`"
    )
