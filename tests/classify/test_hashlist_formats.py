"""Hash-list files as the field shares them: ThreatExchange/HMA 'pdq <hex>' lines, bare
MD5/SHA-1 lists, ThreatExchange CSV; a file that does not read as its format fails with
its line and what was expected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from classify.hashlists import HashListError, HashLists
from pipeline.events import Decision
from pipeline.state.sqlite import SqliteState
from tests.classify.helpers import EngineFactory
from tests.media import near_duplicates, photo_jpeg

PDQ_A = "0f" * 32
PDQ_B = "f0" * 32
MD5_A = "ab" * 16
SHA1_A = "cd" * 20


async def test_threatexchange_pdq_lines_import_and_export(
    state: SqliteState, tmp_path: Path
) -> None:
    lists = HashLists(state.table("hashlists"))
    # What `threatexchange dataset -P` prints, and what HMA's file exchange reads.
    te = tmp_path / "bank.txt"
    te.write_text(
        f"# exported from HMA\npdq {PDQ_A}\n\nvideo_md5 {MD5_A.upper()}\n"
        f"pdq {PDQ_B} 'Sample Collab' POSITIVE_CLASS\n"
    )
    assert await lists.import_file(te, list="block", source="te-sample") == 3
    entries = sorted([e async for e in lists.entries()], key=lambda e: e.key)
    assert [e.key for e in entries] == [f"md5:{MD5_A}", f"pdq:{PDQ_A}", f"pdq:{PDQ_B}"]
    assert {e.source for e in entries} == {"te-sample"}

    out = tmp_path / "out.te"
    written = await lists.export(out)
    assert (written.written, written.skipped) == (3, 0)
    assert sorted(out.read_text().splitlines()) == sorted(
        [f"pdq {PDQ_A}", f"pdq {PDQ_B}", f"video_md5 {MD5_A}"]
    )
    # sha256/SHA-1-only entries have no ThreatExchange type: left out, and said so.
    await lists.add(sha256="e" * 64, list="block")
    assert (await lists.export(out)).skipped == 1


async def test_bare_hash_lists_need_their_type(state: SqliteState, tmp_path: Path) -> None:
    lists = HashLists(state.table("hashlists"))
    md5s = tmp_path / "ncmec-md5.txt"
    md5s.write_text(f"{MD5_A}\n{'12' * 16}\n")
    with pytest.raises(HashListError, match="--type md5"):
        await lists.import_file(md5s, list="block")
    assert await lists.import_file(md5s, list="block", hash_type="md5") == 2
    sha1s = tmp_path / "sha1.txt"
    sha1s.write_text(f"{SHA1_A}\n")
    assert await lists.import_file(sha1s, "txt", list="allow", hash_type="sha1") == 1
    out = tmp_path / "md5-again.txt"
    written = await lists.export(out, hash_type="md5")
    assert written.written == 2 and written.skipped == 0
    assert sorted(out.read_text().split()) == sorted([MD5_A, "12" * 16])


@pytest.mark.parametrize(
    ("name", "text", "fmt", "kwargs", "expected"),
    [
        # A header-less CSV of hashes: never "imported 0 entries".
        (
            "hashes.csv",
            f"{MD5_A}\n{MD5_A}\n",
            None,
            {"list": "block"},
            r"hashes.csv:1: expected a header row.*--format txt --type",
        ),
        ("empty.csv", "", None, {"list": "block"}, "no entries found"),
        ("only-header.csv", "list,sha256\n", None, {}, "no entries found"),
        ("comments.txt", "# nothing yet\n", "te", {"list": "block"}, "no entries found"),
        (
            "bad.te",
            f"pdq {PDQ_A}\npdq {PDQ_A}\nvideo_md5 xyz\n",
            "te",
            {"list": "block"},
            r"bad.te:3: md5 must be 32 hex digits",
        ),
        (
            "url.te",
            f"pdq {PDQ_A}\nurl https://example.com\n",
            "te",
            {"list": "block"},
            r"url.te:2: expected '<signal type> <hash>'",
        ),
        (
            "two.txt",
            f"{MD5_A} {MD5_A}\n",
            "txt",
            {"list": "block", "hash_type": "md5"},
            r"two.txt:1: expected one md5 hash per line",
        ),
        (
            "short.txt",
            f"{MD5_A}\n{'ab' * 15}\n",
            "txt",
            {"list": "block", "hash_type": "md5"},
            r"short.txt:2: md5 must be 32 hex",
        ),
        ("nolist.te", f"pdq {PDQ_A}\n", "te", {}, "give --allow or --block"),
        ("wide.csv", f"list,md5\nblock,{MD5_A},extra\n", None, {}, r"wide.csv:2: 3 fields"),
        (
            "broken.jsonl",
            '{"list": "block", "md5": "' + MD5_A + '"}\n{oops\n',
            None,
            {},
            r"broken.jsonl:2: not JSON",
        ),
        (
            "typed.csv",
            f"md5\n{MD5_A}\n",
            None,
            {"list": "block", "hash_type": "md5"},
            "--type is for te and txt",
        ),
    ],
)
async def test_a_file_that_does_not_read_as_its_format_fails_with_its_line(
    state: SqliteState,
    tmp_path: Path,
    name: str,
    text: str,
    fmt: str | None,
    kwargs: dict[str, str],
    expected: str,
) -> None:
    lists = HashLists(state.table("hashlists"))
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(HashListError, match=expected):
        await lists.import_file(path, fmt, **kwargs)  # type: ignore[arg-type]
    assert [e async for e in lists.entries()] == []  # nothing written


async def test_threatexchange_csv_maps_opinions_to_lists(
    state: SqliteState, tmp_path: Path
) -> None:
    lists = HashLists(state.table("hashlists"))
    path = tmp_path / "collab.csv"  # `threatexchange dataset -P --csv`
    path.write_text(
        "signal_type,signal_str,collab,category,tags\n"
        f"pdq,{PDQ_A},Sample Collab,POSITIVE_CLASS,\n"
        f"video_md5,{MD5_A},Sample Collab,NEGATIVE_CLASS,false_positive\n"
    )
    assert await lists.import_file(path) == 2
    found = {e.key: e async for e in lists.entries()}
    assert found[f"pdq:{PDQ_A}"].list == "block"
    assert found[f"md5:{MD5_A}"].list == "allow"
    assert found[f"md5:{MD5_A}"].reason == "ThreatExchange: Sample Collab"
    seed = tmp_path / "seed.csv"
    seed.write_text(
        f"signal_type,signal_str,collab,category,tags\npdq,{PDQ_B},C,INVESTIGATION_SEED,\n"
    )
    with pytest.raises(HashListError, match=r"seed.csv:2: .*INVESTIGATION_SEED needs review"):
        await lists.import_file(seed)


async def test_md5_and_sha1_entries_match_in_the_fast_path(
    state: SqliteState, tmp_path: Path, make_engine: EngineFactory
) -> None:
    photo = photo_jpeg(6100, 640, 480)
    other = photo_jpeg(6101, 640, 480)
    copy = near_duplicates(photo)["resize_75"]
    lists = HashLists(state.table("hashlists"))
    path = tmp_path / "industry.txt"
    path.write_text(hashlib.md5(photo).hexdigest() + "\n")
    await lists.import_file(path, list="block", hash_type="md5", source="industry-md5")
    await lists.add(sha1=hashlib.sha1(other).hexdigest(), list="block", category="nsfw")
    engine = await make_engine(classifiers=["hashlist"])

    flagged = await engine.lookup_fast(photo)  # no decode: the upload fast path
    assert flagged is not None and flagged.decision is Decision.FLAG_CSAM
    assert flagged.matched == "blocklist:md5 (list: industry-md5)"
    nsfw = await engine.evaluate(other)
    assert nsfw.decision is Decision.FLAG_NSFW and nsfw.matched == "blocklist:sha1"
    # An MD5 is exact: a re-encoded copy is not that file.
    assert (await engine.evaluate(copy)).decision is Decision.ALLOW


async def test_local_entries_beat_feed_entries(state: SqliteState) -> None:
    lists = HashLists(state.table("hashlists"))
    await lists.start()
    sha = "a" * 64
    await lists.add(sha256=sha, list="allow", source="feed:instance-a.example")
    match = lists.match_exact(sha)
    assert match is not None and match.label == "allowlist:sha256 (feed: instance-a.example)"
    await lists.add(sha256=sha, list="block", reason="seen here")  # an admin here decided
    match = lists.match_exact(sha)
    assert match is not None and match.label == "blocklist:sha256"
    await lists.remove(sha256=sha)  # the feed's entry is untouched by a local remove
    match = lists.match_exact(sha)
    assert match is not None and match.entry.feed == "instance-a.example"
