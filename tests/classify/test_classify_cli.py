"""``pictguard hashes …`` and ``pictguard models`` through typer's runner."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from classify.base import ClassifyTables
from classify.cli import register
from classify.hashing import sha256_hex
from classify.hashlists import HashLists
from classify.settings import ClassifySettings, ClipSettings
from pipeline.state.sqlite import SqliteState
from tests.classify import images
from tests.media import photo_jpeg


@pytest.fixture
def cli(tmp_path: Path) -> tuple[typer.Typer, Path]:
    db = tmp_path / "state.sqlite3"

    @asynccontextmanager
    async def open_tables() -> AsyncIterator[ClassifyTables]:
        state = SqliteState(db)
        await state.start()
        try:
            yield ClassifyTables(state.table("hashlists"), state.table("verdict_cache"))
        finally:
            await state.stop()

    settings = ClassifySettings(
        classifiers=["hashlist", "nudenet", "clip"], clip=ClipSettings(cache_dir=tmp_path / "hf")
    )
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app, open_tables, lambda: settings)
    return app, db


def entries(db: Path) -> dict[str, dict[str, object]]:
    async def read() -> dict[str, dict[str, object]]:
        state = SqliteState(db)
        await state.start()
        try:
            lists = HashLists(state.table("hashlists"))
            return {e.key: e.model_dump(mode="json") async for e in lists.entries()}
        finally:
            await state.stop()

    return asyncio.run(read())


def test_add_image_then_remove(cli: tuple[typer.Typer, Path], tmp_path: Path) -> None:
    app, db = cli
    image = tmp_path / "known.jpg"
    image.write_bytes(images.jpeg(70))
    runner = CliRunner()
    result = runner.invoke(app, ["hashes", "add", "--block", str(image), "--reason", "report 7"])
    assert result.exit_code == 0, result.output
    assert "blocklist csam" in result.output
    stored = entries(db)[sha256_hex(image.read_bytes())]
    assert stored["reason"] == "report 7" and stored["pdq"] and stored["list"] == "block"

    result = runner.invoke(app, ["hashes", "remove", str(image)])
    assert result.exit_code == 0 and "removed" in result.output
    assert entries(db) == {}
    assert runner.invoke(app, ["hashes", "remove", str(image)]).exit_code == 1


def test_add_known_hash_and_bad_input(cli: tuple[typer.Typer, Path], tmp_path: Path) -> None:
    app, db = cli
    runner = CliRunner()
    ok = runner.invoke(app, ["hashes", "add", "--allow", "--sha256", "c" * 64, "--reason", "fp"])
    assert ok.exit_code == 0, ok.output
    assert entries(db)["c" * 64]["list"] == "allow"
    bad = runner.invoke(app, ["hashes", "add", "--block", "--sha256", "nothex"])
    assert bad.exit_code == 2 and "64 hex" in bad.output
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(images.PDF)
    not_image = runner.invoke(app, ["hashes", "add", "--block", str(pdf)])
    assert not_image.exit_code == 2 and "unsupported_type" in not_image.output


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_export_import(cli: tuple[typer.Typer, Path], tmp_path: Path, suffix: str) -> None:
    app, db = cli
    runner = CliRunner()
    runner.invoke(app, ["hashes", "add", "--block", "--sha256", "d" * 64, "--reason", "r1"])
    runner.invoke(app, ["hashes", "add", "--allow", "--pdq", "e" * 64, "--reason", "r2"])
    out = tmp_path / f"out{suffix}"
    result = runner.invoke(app, ["hashes", "export", str(out)])
    assert result.exit_code == 0 and "exported 2" in result.output
    before = entries(db)
    db.unlink()
    result = runner.invoke(app, ["hashes", "import", str(out)])
    assert result.exit_code == 0 and "imported 2" in result.output
    assert entries(db) == before


def _pictguard(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "pictguard.cli", "-c", str(config), *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_without_a_list_is_refused_not_blocklisted(tmp_path: Path) -> None:
    """A reviewed-images CSV with no list column, imported without --allow/--block: nothing
    lands on the blocklist (which would quarantine those images on the next scan)."""
    config = tmp_path / "pictguard.yaml"
    config.write_text(yaml.safe_dump({"storage": {"state_dir": str(tmp_path / "state")}}))
    photos = [photo_jpeg(800 + i, 320, 240) for i in range(3)]
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text(
        "sha256,reason\n" + "".join(f"{sha256_hex(p)},looked fine\n" for p in photos)
    )

    refused = _pictguard(config, "hashes", "import", str(reviewed))
    assert refused.returncode == 2
    assert "--allow or --block" in refused.stderr and "reviewed.csv:2" in refused.stderr
    out = tmp_path / "lists.jsonl"
    assert "exported 0 entries" in _pictguard(config, "hashes", "export", str(out)).stdout

    # With the list said, or with a list column on every row, it imports.
    assert _pictguard(config, "hashes", "import", "--allow", str(reviewed)).returncode == 0
    assert "exported 3 entries" in _pictguard(config, "hashes", "export", str(out)).stdout
    assert {json.loads(line)["list"] for line in out.read_text().splitlines()} == {"allow"}


def test_models_lists_sources(cli: tuple[typer.Typer, Path]) -> None:
    app, _ = cli
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 1  # CLIP weights are not here
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["hashlist"]["present"] and rows["nudenet"]["present"]
    # The hash lists need no weights: nothing to download, nothing missing.
    assert rows["hashlist"]["source"].startswith("built in") and not rows["hashlist"]["detail"]
    assert "hashlist: no weights" not in CliRunner().invoke(app, ["models"]).output
    assert rows["nudenet"]["location"].endswith("320n.onnx")
    assert not rows["clip"]["present"]
    assert "PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH" in rows["clip"]["detail"]
