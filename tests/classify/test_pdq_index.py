"""The PDQ index returns exactly what a brute-force Hamming scan returns."""

from __future__ import annotations

import numpy as np
import pytest

from classify import pdq_index
from classify.hashing import pdq_distance, pdq_hash
from classify.pdq_index import PdqIndex
from tests import media
from tests.classify import images, pdq_corpus
from tests.servers import wait_until


def _random_hashes(rng: np.random.Generator, n: int) -> list[str]:
    return [bytes(row).hex() for row in rng.integers(0, 256, (n, 32), dtype=np.uint8)]


def _flip(pdq: str, bits: list[int]) -> str:
    value = int(pdq, 16)
    for bit in bits:
        value ^= 1 << int(bit)
    return f"{value:064x}"


def _random_flips(pdq: str, count: int, rng: np.random.Generator) -> str:
    return _flip(pdq, [int(b) for b in rng.choice(256, size=count, replace=False)])


def _spread_flips(pdq: str, count: int, rng: np.random.Generator) -> str:
    """``count`` flips spread so no 16-bit chunk keeps fewer than ``count // 16`` of them:
    at 31, every chunk but one has two — the case one-bit probing exists for."""
    chunks = rng.permutation(16)
    bits = [
        int(chunks[i % 16]) * 16 + int(offset)
        for i, offset in enumerate(rng.permutation(16).tolist() * 2)
        if i < count
    ]
    return _flip(pdq, bits)


def _brute_force(stored: dict[str, str], query: str) -> int | None:
    """The smallest distance from ``query`` to anything stored (None if empty)."""
    if not stored:
        return None
    codes = np.stack([np.frombuffer(bytes.fromhex(pdq), dtype=np.uint8) for pdq in stored.values()])
    xor = codes ^ np.frombuffer(bytes.fromhex(query), dtype=np.uint8)
    return int(np.unpackbits(xor, axis=1).sum(axis=1).min())


def _check(index: PdqIndex, stored: dict[str, str], queries: list[str], radius: int = 31) -> int:
    """Every query's hit is the brute-force nearest (within ``radius``); returns hits."""
    found = 0
    singles = [index.search([query], radius)[0] for query in queries]
    assert singles == index.search(queries, radius)  # one at a time = batched
    for query, hit in zip(queries, singles, strict=True):
        best = _brute_force(stored, query)
        if best is not None and best <= radius:
            assert hit is not None, f"missed a hash at distance {best}"
            assert hit.distance == best
            assert pdq_distance(query, stored[hit.key]) == best
            found += 1
        else:
            assert hit is None
    return found


def test_index_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(1)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 5000))}
    index = PdqIndex()
    index.add_many(list(stored.items()))
    values = list(stored.values())
    # Near copies with 0..45 random flips, 31 and 32 flips spread over every chunk (the
    # hardest case for multi-index hashing), and unrelated hashes.
    queries = [_random_flips(values[i], int(rng.integers(0, 46)), rng) for i in range(300)]
    queries += [_spread_flips(values[i], 31, rng) for i in range(300, 400)]
    queries += [_spread_flips(values[i], 32, rng) for i in range(400, 450)]
    queries += _random_hashes(rng, 100)
    found = _check(index, stored, queries)
    assert found >= 300  # the test exercises matches, not only misses


def test_real_near_duplicates_are_found() -> None:
    """Resized, re-encoded, cropped copies of generated photos, hashed as the engine does."""
    rng = np.random.default_rng(3)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 3000))}
    sets = pdq_corpus.near_duplicate_hashes([media.photo_jpeg(i, 800, 600) for i in range(3)])
    for i, (original, _) in enumerate(sets):
        stored[f"img{i}"] = original
    index = PdqIndex()
    index.add_many(list(stored.items()))
    copies = [copy for _, copies in sets for copy in copies]
    assert _check(index, stored, copies) >= len(copies) - 3


def test_a_radius_above_31_is_still_exact() -> None:
    rng = np.random.default_rng(4)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 500))}
    index = PdqIndex()
    index.add_many(list(stored.items()))
    values = list(stored.values())
    queries = [_random_flips(values[i], int(rng.integers(30, 80)), rng) for i in range(60)]
    assert _check(index, stored, queries, radius=70) > 0


def test_replace_and_remove() -> None:
    rng = np.random.default_rng(2)
    first, second = _random_hashes(rng, 2)
    index = PdqIndex()
    index.add("a", first)
    index.add("a", second)  # replaces
    assert len(index) == 1
    assert index.search([first], 31) == [None]
    hit = index.search([second], 31)[0]
    assert hit is not None and (hit.key, hit.distance) == ("a", 0)
    index.remove("a")
    index.remove("never added")
    assert len(index) == 0 and index.search([second], 31) == [None]


@pytest.mark.parametrize("delta_limit", [4, 64])
def test_runtime_changes_match_brute_force_across_rebuilds(delta_limit: int) -> None:
    """Single adds, replacements and removals after a bulk load, as the hash-list table
    subscription makes them; small limits force many rebuilds along the way."""
    rng = np.random.default_rng(5)
    index = PdqIndex(delta_limit=delta_limit)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 400))}
    index.add_many(list(stored.items()))
    for step in range(600):
        action = rng.random()
        if action < 0.4:
            key = f"n{step}"
            stored[key] = _random_hashes(rng, 1)[0]
            index.add(key, stored[key])
        elif action < 0.6 and stored:
            key = list(stored)[int(rng.integers(len(stored)))]
            stored[key] = _random_hashes(rng, 1)[0]  # replaced by another hash
            index.add(key, stored[key])
        elif stored:
            key = list(stored)[int(rng.integers(len(stored)))]
            del stored[key]
            index.remove(key)
        if step % 50 == 0:
            values = list(stored.values())
            picks = rng.integers(len(values), size=10)
            queries = [_random_flips(values[int(i)], int(rng.integers(0, 32)), rng) for i in picks]
            assert _check(index, stored, queries) == len(queries)
    assert len(index) == len(stored)
    gone = [key for key in (f"k{i}" for i in range(400)) if key not in stored]
    assert gone  # removals happened
    assert all(
        hit is None or hit.key in stored for hit in index.search(_random_hashes(rng, 50), 31)
    )


def test_changes_during_a_rebuild_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries removed, replaced and added while a search rebuilds the tables (outside
    the lock): searches meanwhile see every change, and so do the new tables."""
    rng = np.random.default_rng(6)
    index = PdqIndex(delta_limit=8)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 2000))}
    index.add_many(list(stored.items()))
    for i in range(9):  # past the limit: the next search rebuilds
        stored[f"n{i}"] = _random_hashes(rng, 1)[0]
        index.add(f"n{i}", stored[f"n{i}"])
    old = dict(stored)

    def change_everything() -> None:
        for i in range(0, 40, 2):
            index.remove(f"k{i}")  # in the tables being replaced
            del stored[f"k{i}"]
            stored[f"k{i + 1}"] = _random_hashes(rng, 1)[0]  # replaced
            index.add(f"k{i + 1}", stored[f"k{i + 1}"])
            stored[f"m{i}"] = _random_hashes(rng, 1)[0]  # new
            index.add(f"m{i}", stored[f"m{i}"])
        index.remove("n0")  # being built into the new tables
        del stored["n0"]
        stored["n1"] = _random_hashes(rng, 1)[0]
        index.add("n1", stored["n1"])
        queries = [old[key] for key in ("k0", "k1", "n0", "n1")] + [stored["m0"], stored["n1"]]
        assert _check(index, stored, queries) == 2  # mid-build searches see it all

    real_tables = pdq_index._Tables
    builds: list[int] = []

    def build_with_interference(codes: np.ndarray, keys: list[str]) -> object:
        builds.append(len(keys))
        if len(builds) == 1:
            change_everything()
        return real_tables(codes, keys)

    monkeypatch.setattr(pdq_index, "_Tables", build_with_interference)
    index.compact()
    assert builds == [2009]
    assert len(index) == len(stored)
    stale = [old[f"k{i}"] for i in range(40)] + [old["n0"], old["n1"]]
    assert index.search(stale, 0) == [None] * len(stale)
    keys = [f"k{i}" for i in range(1, 40, 2)] + [f"m{i}" for i in range(0, 40, 2)] + ["n1"]
    hits = index.search([stored[key] for key in keys], 0)
    assert [hit.key if hit else None for hit in hits] == keys
    values = list(stored.values())
    queries = [_random_flips(values[int(i)], 20, rng) for i in rng.integers(len(values), size=50)]
    assert _check(index, stored, queries) == len(queries)


def test_changes_during_a_bulk_load_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-up load is built at once; removals and replacements of its keys (and of
    older ones) made while it builds still win."""
    rng = np.random.default_rng(7)
    index = PdqIndex(delta_limit=16)
    older = {f"old{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 50))}
    index.add_many(list(older.items()))
    load = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 500))}
    load["old0"] = _random_hashes(rng, 1)[0]  # the load replaces an older entry
    replacement = _random_hashes(rng, 1)[0]
    real_tables = pdq_index._Tables

    def build_with_interference(codes: np.ndarray, keys: list[str]) -> object:
        monkeypatch.setattr(pdq_index, "_Tables", real_tables)  # once
        assert len(index) == 49 + 501  # older entries (old0 replaced) and the load
        index.remove("k0")  # in the load being built
        index.add("k1", replacement)  # in the load being built
        index.remove("old1")  # in the tables being replaced
        return real_tables(codes, keys)

    monkeypatch.setattr(pdq_index, "_Tables", build_with_interference)
    index.add_many(list(load.items()))
    stored = {**older, **load, "k1": replacement}
    del stored["k0"], stored["old1"]
    assert len(index) == len(stored)
    gone = [load["k0"], older["old0"], older["old1"], load["k1"]]
    assert index.search(gone, 0) == [None] * 4
    values = list(stored.values())
    queries = [_random_flips(values[int(i)], 25, rng) for i in rng.integers(len(values), size=50)]
    assert _check(index, stored, [*queries, replacement, load["old0"]]) == 52


def test_a_search_past_the_limit_rebuilds_in_the_background() -> None:
    rng = np.random.default_rng(8)
    index = PdqIndex(delta_limit=32)
    stored = {f"k{i}": pdq for i, pdq in enumerate(_random_hashes(rng, 100))}
    index.add_many(list(stored.items()))  # a bulk load: built at once
    assert index.pending == 0
    for i in range(40):
        stored[f"n{i}"] = _random_hashes(rng, 1)[0]
        index.add(f"n{i}", stored[f"n{i}"])
    index.remove("k0")
    del stored["k0"]
    assert index.pending == 41  # 40 in the side list, 1 tombstone
    assert _check(index, stored, [stored["n39"], stored["k1"]]) == 2
    wait_until(lambda: index.pending == 0, timeout=60, what="the background rebuild")
    assert len(index) == len(stored)
    picks = list(stored.values())[::7]
    assert _check(index, stored, picks) == len(picks)


def test_bad_hashes_are_refused() -> None:
    index = PdqIndex()
    with pytest.raises(ValueError, match="64 hex digits"):
        index.add("a", "abc")
    with pytest.raises(ValueError):
        index.search(["z" * 64], 31)
    assert len(index) == 0


def test_pdq_survives_resize_and_reencode() -> None:
    original = images.scene(11, (800, 600))
    copy = original.resize((500, 375)).convert("RGB")
    first, quality = pdq_hash(np.asarray(original))
    second, _ = pdq_hash(np.asarray(copy))
    other, _ = pdq_hash(np.asarray(images.scene(12, (800, 600))))
    assert quality >= 50
    assert pdq_distance(first, second) <= 31
    assert pdq_distance(first, other) > 31
