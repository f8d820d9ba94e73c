"""A realistic review queue for the console tests, built the way pictguard builds one.

Photo-like JPEGs (tests/media.py) in a watched folder; some are put on the blocklist and
``pictguard scan`` quarantines them (hash-list matches); one gets a model verdict as
classify would send it (model only); one pict-rs upload is rejected and kept through the
evidence path. Nothing objectionable: "flagged" means "its hash is on the list".
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from enforce.enforcer import Enforcer
from enforce.preserve import UploadKeeper
from enforce.quarantine import quarantine_key
from enforce.stage import EnforceStage
from pictguard.scan import run_scan
from pictguard.settings import Settings, load_settings
from pipeline.bus.base import Message
from pipeline.bus.memory import MemoryBus
from pipeline.events import (
    Decision,
    Lane,
    ObjectRef,
    Source,
    StoreKind,
    UploadEvidence,
    Verdict,
    encode,
)
from pipeline.hashlists import HashListStore
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores
from pipeline.topics import VERDICTS
from tests.media import pdq_hash, photo_jpeg

ADMIN_TOKEN = "admin-token-for-the-review-tests"
REVIEWERS = {"ana": "ana-personal-token-0001", "bo": "bo-personal-token-00002"}


@dataclass
class Scenario:
    """What was set up: settings, where things are, and the images by name."""

    root: Path
    config: dict[str, Any]
    settings: Settings
    images: dict[str, bytes] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # names flagged by the blocklist
    model_only: str = "sunset-model.jpg"
    upload: str = "upload.jpg"

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def quarantined(self, name: str) -> Path:
        """Where the quarantine keeps its copy of ``media/name`` (unique per source)."""
        ref = ObjectRef(store=StoreKind.FILE, bucket=str(self.media.resolve()), key=name)
        return self.quarantine / quarantine_key(ref)

    @property
    def config_file(self) -> Path:
        path = self.root / "pictguard.yaml"
        path.write_text(yaml.safe_dump(self.config))
        return path

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.images[name]).hexdigest()


def scenario_config(root: Path, **enforce: Any) -> dict[str, Any]:
    """Settings as an admin would write them for a folder-watching single box."""
    return {
        "storage": {"state_dir": str(root / "state")},
        "classify": {"classifiers": ["hashlist"]},
        "enforce": {
            "quarantine": str(root / "quarantine"),
            "admin_token": ADMIN_TOKEN,
            "review": {"reviewers": dict(REVIEWERS)},
            **enforce,
        },
        "log": {"level": "WARNING"},
    }


async def build(root: Path, *, listed: int = 3, clean: int = 2, **enforce: Any) -> Scenario:
    """Scan a folder of photos with ``listed`` of them blocklisted, then add a model-only
    verdict and a kept upload."""
    config = scenario_config(root, **enforce)
    settings = load_settings(**config)
    scenario = Scenario(root, config, settings)
    scenario.media.mkdir(parents=True)
    for i in range(listed + clean):
        name = f"{'listed' if i < listed else 'clean'}-{i:02d}.jpg"
        scenario.images[name] = photo_jpeg(700 + i, 640, 480, detail=1.0)
        if i < listed:
            scenario.listed.add(name)
    scenario.images[scenario.model_only] = photo_jpeg(901, 800, 600, detail=1.0)
    scenario.images[scenario.upload] = photo_jpeg(902, 512, 512, detail=1.0)
    for name, data in scenario.images.items():
        if name != scenario.upload:
            (scenario.media / name).write_bytes(data)

    state = SqliteState(settings.storage.state_file)
    await state.start()
    try:
        lists = HashListStore(state.table("hashlists"))
        for name in scenario.listed:
            await lists.add(
                sha256=scenario.sha256(name), list="block", reason="known", author="test"
            )
    finally:
        await state.stop()

    summary = await run_scan(settings, str(scenario.media))
    assert summary.decisions[Decision.FLAG_CSAM] == listed, summary

    await _model_verdict_and_upload(scenario)
    return scenario


async def _model_verdict_and_upload(scenario: Scenario) -> None:
    settings = scenario.settings
    state = SqliteState(settings.storage.state_file)
    await state.start()
    stores = Stores(settings.s3)
    bus = MemoryBus()
    try:
        # A model's verdict, as classify sends it: no list matched, scores above threshold.
        data = scenario.images[scenario.model_only]
        pdq, quality = pdq_hash(data)
        verdict = Verdict(
            request_id="m" * 32,
            source=Source.WATCH,
            object=ObjectRef(
                store=StoreKind.FILE, bucket=str(scenario.media), key=scenario.model_only
            ),
            decision=Decision.FLAG_CSAM,
            sha256=hashlib.sha256(data).hexdigest(),
            pdq=pdq,
            pdq_quality=quality,
            scores={"csam": 0.83, "nsfw": 0.91},
            classifiers=["clip", "nudenet"],
            model_version="clip:ViT-L-14/openai",
        )
        stage = EnforceStage(bus, settings, stores, state)
        await stage.start()
        await stage.handle(
            [Message(settings.topic(VERDICTS), encode(verdict), verdict.key.encode())]
        )
        # A pict-rs upload the API rejected by the blocklist and handed over for keeping.
        upload = scenario.images[scenario.upload]
        await HashListStore(state.table("hashlists")).add(
            sha256=hashlib.sha256(upload).hexdigest(), list="block", reason="known", author="t"
        )
        scenario.listed.add(scenario.upload)
        rejected = Verdict(
            request_id="u" * 32,
            lane=Lane.SYNC,
            source=Source.API,
            decision=Decision.FLAG_CSAM,
            sha256=hashlib.sha256(upload).hexdigest(),
            matched="blocklist:sha256",
            classifiers=["hashlist"],
        )
        enforcer: Enforcer = stage.enforcer
        keeper = UploadKeeper(enforcer, settings, stores)
        await keeper.start()
        await keeper.keep(
            UploadEvidence(
                verdict=rejected, content=upload, content_type="image/jpeg", client_id="pictrs"
            )
        )
        await stage.stop()
    finally:
        await stores.close()
        await state.stop()


def laplacian_energy(data: bytes) -> float:
    """Mean absolute Laplacian of an image's grey levels: high-frequency detail per pixel."""
    with Image.open(io.BytesIO(data)) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    lap = (
        -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    )
    return float(np.abs(lap).mean())


def at_size(data: bytes, size: tuple[int, int]) -> bytes:
    """The image resized (for comparing detail at the size the browser got)."""
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(out, "PNG")
    return out.getvalue()


async def held(root: Path) -> tuple[Scenario, list[Verdict]]:
    """Two model verdicts in one minute with the guard allowing one: the second is held."""
    config = scenario_config(root, guard={"max_destructive_per_minute": 1})
    settings = load_settings(**config)
    scenario = Scenario(root, config, settings)
    scenario.media.mkdir(parents=True)
    verdicts = []
    for i, name in enumerate(("first.jpg", "second.jpg")):
        data = photo_jpeg(950 + i, 640, 480, detail=1.0)
        scenario.images[name] = data
        (scenario.media / name).write_bytes(data)
        verdicts.append(
            Verdict(
                request_id=f"{i}" * 32,
                source=Source.WATCH,
                object=ObjectRef(store=StoreKind.FILE, bucket=str(scenario.media), key=name),
                decision=Decision.FLAG_CSAM,
                sha256=hashlib.sha256(data).hexdigest(),
                scores={"csam": 0.8},
                classifiers=["clip"],
            )
        )
    state = SqliteState(settings.storage.state_file)
    await state.start()
    stores = Stores(settings.s3)
    try:
        stage = EnforceStage(MemoryBus(), settings, stores, state)
        await stage.start()
        for verdict in verdicts:
            await stage.handle(
                [Message(settings.topic(VERDICTS), encode(verdict), verdict.key.encode())]
            )
        await stage.stop()
    finally:
        await stores.close()
        await state.stop()
    return scenario, verdicts
