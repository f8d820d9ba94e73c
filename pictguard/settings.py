"""The whole configuration: the foundation's sections plus every role's own.

Only the composition root knows all the sections; each role reads its own through the
protocol its settings module defines (``ClassifyConfig``, ``EnforceConfig``…), which this
``Settings`` satisfies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from classify.settings import ClassifySettings
from enforce.settings import EnforceSettings
from ingest.settings import IngestSettings
from pipeline.settings import PipelineSettings, load_into
from validate_api.settings import ApiSettings

if TYPE_CHECKING:
    from pipeline.storage.locations import Scope


class Settings(PipelineSettings):
    """The whole configuration."""

    classify: ClassifySettings = Field(default_factory=ClassifySettings)  # type: ignore[arg-type]
    enforce: EnforceSettings = Field(default_factory=EnforceSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _worker_tokens_are_their_own(self) -> Settings:
        # A worker token opens the worker API only: it must not also be a scan client's
        # or the admin's token, or it would open their endpoints too.
        others = {c.token.get_secret_value() for c in self.api.clients if c.token is not None}
        if self.enforce.admin_token is not None:
            others.add(self.enforce.admin_token.get_secret_value())
        for worker in self.classify.remote.workers:
            if worker.secret in others:
                raise ValueError(
                    f"classify.remote.workers {worker.id}: its token is also an api.clients or "
                    "enforce.admin_token token; give each worker a token of its own"
                )
        return self


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and ``config``; raise ``SettingsError``."""
    return load_into(Settings, config, **overrides)


def storage_scope(settings: Settings, targets: Sequence[str] = ()) -> Scope:
    """Where this process may act, and the quarantine location it never scans.

    Allowed: ``storage.allowed_locations``, plus ``targets`` (a scan, backfill or
    reconcile target given on the command line), ``ingest.watch.roots`` and
    ``ingest.reconcile.locations``: configuring a location to scan says pictguard may act
    there. The quarantine location comes from ``enforce.quarantine``.
    """
    from enforce.quarantine import QuarantineSpec
    from pipeline.storage.locations import Scope

    spec = QuarantineSpec.parse(settings.enforce.quarantine, settings.storage.state_dir)
    named = {
        "storage.allowed_locations": list(settings.storage.allowed_locations),
        "command line": list(targets),
        "ingest.watch.roots": [str(r) for r in settings.ingest.watch.roots],
        "ingest.reconcile.locations": list(settings.ingest.reconcile.locations),
    }
    location = spec.location
    return Scope.of(
        [text for texts in named.values() for text in texts],
        quarantine=[location] if location is not None else [],
        quarantine_prefix=spec.prefix if location is None else None,
        sources=tuple(name for name, texts in named.items() if texts),
    )
