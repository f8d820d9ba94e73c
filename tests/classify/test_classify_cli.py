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


def test_add_needs_a_list(cli: tuple[typer.Typer, Path]) -> None:
    app, db = cli
    result = CliRunner().invoke(app, ["hashes", "add", "--sha256", "c" * 64])
    assert result.exit_code == 2 and "--allow or --block" in result.output
    assert not db.exists() or entries(db) == {}


def test_list_filters_and_json(cli: tuple[typer.Typer, Path], tmp_path: Path) -> None:
    app, _ = cli
    runner = CliRunner()
    md5s = tmp_path / "industry.txt"
    md5s.write_text("ab" * 16 + "\n" + "cd" * 16 + "\n")
    imported = runner.invoke(
        app,
        ["hashes", "import", str(md5s), "--block", "--type", "md5", "--source", "industry"],
    )
    assert imported.exit_code == 0 and "imported 2 entries" in imported.output
    runner.invoke(app, ["hashes", "add", "--allow", "--sha256", "e" * 64, "--reason", "fp"])

    rows = json.loads(runner.invoke(app, ["hashes", "list", "--json"]).output)
    assert {(r["list"], r["source"]) for r in rows} == {("block", "industry"), ("allow", "local")}
    md5_rows = json.loads(runner.invoke(app, ["hashes", "list", "--json", "--type", "md5"]).output)
    assert sorted(r["md5"] for r in md5_rows) == ["ab" * 16, "cd" * 16]
    assert all(r["key"].startswith("md5:") for r in md5_rows)
    local = json.loads(runner.invoke(app, ["hashes", "list", "--json", "--source", "local"]).output)
    assert [r["sha256"] for r in local] == ["e" * 64]
    table = runner.invoke(app, ["hashes", "list", "--list", "block"], terminal_width=200)
    assert "industry" in table.output and "2 entries" in table.output
    assert runner.invoke(app, ["hashes", "list", "--type", "crc32"]).exit_code == 2

    out = tmp_path / "for-hma.te"
    exported = runner.invoke(app, ["hashes", "export", str(out), "--list", "block"])
    assert exported.exit_code == 0 and "exported 2 entries" in exported.output
    assert sorted(out.read_text().splitlines()) == [
        f"video_md5 {'ab' * 16}",
        f"video_md5 {'cd' * 16}",
    ]


def test_import_of_bare_hashes_in_a_csv_says_which_line_and_how(
    cli: tuple[typer.Typer, Path], tmp_path: Path
) -> None:
    app, db = cli
    bare = tmp_path / "hashes.csv"
    bare.write_text("ab" * 16 + "\n")
    result = CliRunner().invoke(app, ["hashes", "import", "--block", str(bare)], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "hashes.csv:1" in result.output and "--format txt --type" in result.output
    assert "imported" not in result.output
    fixed = CliRunner().invoke(
        app, ["hashes", "import", "--block", "--format", "txt", "--type", "md5", str(bare)]
    )
    assert fixed.exit_code == 0 and "imported 1 entries" in fixed.output
    assert list(entries(db)) == ["md5:" + "ab" * 16]
