"""Hash list entries: add, remove, import/export round trips, live index updates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classify.hashing import sha256_hex
from classify.hashlists import HashListError, HashLists
from pipeline.state.sqlite import SqliteState
from tests.classify import images

SHA_A = "a" * 64
SHA_B = "b" * 64
PDQ_A = "0f" * 32


@pytest.mark.asyncio
async def test_add_get_remove(state: SqliteState) -> None:
    lists = HashLists(state.table("hashlists"))
    entry = await lists.add(sha256=SHA_A.upper(), pdq=PDQ_A, reason="known", author="admin")
    assert entry.sha256 == SHA_A  # normalised
    stored = await lists.get(SHA_A)
    assert stored is not None and stored.reason == "known" and stored.list == "block"
    assert stored.category == "csam"
    assert await lists.remove(sha256=SHA_A) is True
    assert await lists.remove(sha256=SHA_A) is False
    assert await lists.get(SHA_A) is None


@pytest.mark.asyncio
async def test_invalid_entries_are_refused(state: SqliteState) -> None:
    lists = HashLists(state.table("hashlists"))
    with pytest.raises(HashListError, match="64 hex"):
        await lists.add(sha256="xyz")
    with pytest.raises(HashListError, match="a sha256, md5, sha1 or pdq"):
        await lists.add(reason="nothing to match")


@pytest.mark.asyncio
async def test_started_lists_follow_table_changes(state: SqliteState) -> None:
    table = state.table("hashlists")
    lists = HashLists(table)
    await lists.start()
    writer = HashLists(table)  # another handle on the same table, like the CLI's
    await writer.add(sha256=SHA_A, pdq=PDQ_A, list="allow", reason="false positive")
    match = lists.match_exact(SHA_A)
    assert match is not None and match.label == "allowlist:sha256"
    pdq_match = lists.match_pdq(PDQ_A, 100)
    assert pdq_match is not None and pdq_match.label == "allowlist:pdq:0"
    assert lists.match_pdq(PDQ_A, 49) is None  # low-quality query hashes never match
    await writer.remove(sha256=SHA_A)
    assert lists.match_exact(SHA_A) is None and lists.match_pdq(PDQ_A, 100) is None


@pytest.mark.asyncio
async def test_start_loads_existing_entries(state: SqliteState) -> None:
    table = state.table("hashlists")
    await HashLists(table).add(sha256=SHA_B, pdq=PDQ_A, category="nsfw", reason="spam")
    lists = HashLists(table)
    await lists.start()
    match = lists.match_pdq(PDQ_A, 90)
    assert match is not None and match.entry.category == "nsfw"


@pytest.mark.asyncio
async def test_allow_beats_block_at_the_same_strength(state: SqliteState) -> None:
    lists = HashLists(state.table("hashlists"))
    await lists.start()
    near = PDQ_A[:-1] + "e"  # 1 bit away
    await lists.add(pdq=PDQ_A, list="block", reason="known bad")
    await lists.add(sha256=SHA_A, pdq=near, list="allow", reason="false positive")
    match = lists.match_pdq(PDQ_A, 100)
    assert match is not None and match.entry.list == "allow"


@pytest.mark.asyncio
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
async def test_export_import_round_trip(state: SqliteState, tmp_path: Path, suffix: str) -> None:
    source = HashLists(state.table("source"))
    await source.add(sha256=SHA_A, pdq=PDQ_A, pdq_quality=88, reason="a, with comma", author="x")
    await source.add(sha256=SHA_B, list="allow", reason='quote " inside', category="nsfw")
    await source.add(pdq="1" * 64, reason="pdq only")
    path = tmp_path / f"lists{suffix}"
    assert (await source.export(path)).written == 3
    target = HashLists(state.table("target"))
    assert await target.import_file(path) == 3
    exported = sorted([e async for e in source.entries()], key=lambda e: e.key)
    imported = sorted([e async for e in target.entries()], key=lambda e: e.key)
    assert imported == exported
    assert (await target.export(tmp_path / f"again{suffix}")).written == 3
    assert (tmp_path / f"again{suffix}").read_text() == path.read_text()


@pytest.mark.asyncio
async def test_import_fills_defaults_and_reports_bad_rows(
    state: SqliteState, tmp_path: Path
) -> None:
    lists = HashLists(state.table("hashlists"))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"sha256": SHA_A}) + "\n\n" + json.dumps({"pdq": PDQ_A}) + "\n")
    assert await lists.import_file(good, list="allow", reason="imported", author="ops") == 2
    entry = await lists.get(SHA_A)
    assert entry is not None and (entry.list, entry.reason, entry.author) == (
        "allow",
        "imported",
        "ops",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("list,sha256,reason\nblock," + SHA_B + ",ok\nblock,not-a-hash,broken\n")
    with pytest.raises(HashListError, match=r"bad.csv:3: sha256"):
        await lists.import_file(bad)
    assert await lists.get(SHA_B) is None  # nothing written from a bad file


@pytest.mark.asyncio
async def test_add_image_hashes_the_file(state: SqliteState, tmp_path: Path) -> None:
    path = tmp_path / "known.jpg"
    path.write_bytes(images.jpeg(21))
    lists = HashLists(state.table("hashlists"))
    entry = await lists.add_image(path, reason="report #12")
    assert entry.sha256 == sha256_hex(path.read_bytes())
    assert entry.pdq is not None and entry.pdq_quality is not None
