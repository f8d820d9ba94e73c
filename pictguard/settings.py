"""The whole configuration: the foundation's sections plus every role's own.

Only the composition root knows all the sections; each role reads its own through the
protocol its settings module defines (``ClassifyConfig``, ``EnforceConfig``…), which this
``Settings`` satisfies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from classify.settings import ClassifySettings
from enforce.settings import EnforceSettings
from ingest.settings import IngestSettings
from pipeline.settings import PipelineSettings, load_into
from validate_api.settings import ApiSettings


class Settings(PipelineSettings):
    """The whole configuration."""

    classify: ClassifySettings = Field(default_factory=ClassifySettings)  # type: ignore[arg-type]
    enforce: EnforceSettings = Field(default_factory=EnforceSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and ``config``; raise ``SettingsError``."""
    return load_into(Settings, config, **overrides)
