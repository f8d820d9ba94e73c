"""The faiss PDQ index returns exactly what a brute-force Hamming scan returns."""

from __future__ import annotations

import numpy as np

from classify.hashing import pdq_distance, pdq_hash
from classify.pdq_index import PdqIndex
from tests.classify import images


def _random_hashes(rng: np.random.Generator, n: int) -> list[str]:
    return [bytes(row).hex() for row in rng.integers(0, 256, (n, 32), dtype=np.uint8)]


def _flip(pdq: str, bits: int, rng: np.random.Generator) -> str:
    value = int(pdq, 16)
    for bit in rng.choice(256, size=bits, replace=False):
        value ^= 1 << int(bit)
    return f"{value:064x}"


def test_index_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(1)
    stored = _random_hashes(rng, 5000)
    index = PdqIndex()
    index.add_many([(f"k{i}", pdq) for i, pdq in enumerate(stored)])
    # Queries near stored hashes (0..45 flipped bits) and unrelated ones.
    queries = [_flip(stored[i], int(rng.integers(0, 46)), rng) for i in range(300)]
    queries += _random_hashes(rng, 100)
    hits = index.search(queries, 31)
    codes = np.stack([np.frombuffer(bytes.fromhex(pdq), dtype=np.uint8) for pdq in stored])
    for query, hit in zip(queries, hits, strict=True):
        xor = codes ^ np.frombuffer(bytes.fromhex(query), dtype=np.uint8)
        distances = np.unpackbits(xor, axis=1).sum(axis=1)  # brute-force Hamming
        best = int(distances.min())
        if best <= 31:
            assert hit is not None and hit.distance == best
            assert pdq_distance(query, stored[int(hit.key[1:])]) == best
        else:
            assert hit is None


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
    assert len(index) == 0 and index.search([second], 31) == [None]


def test_pdq_survives_resize_and_reencode() -> None:
    original = images.scene(11, (800, 600))
    copy = original.resize((500, 375)).convert("RGB")
    first, quality = pdq_hash(np.asarray(original))
    second, _ = pdq_hash(np.asarray(copy))
    other, _ = pdq_hash(np.asarray(images.scene(12, (800, 600))))
    assert quality >= 50
    assert pdq_distance(first, second) <= 31
    assert pdq_distance(first, other) > 31
