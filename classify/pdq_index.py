"""Nearest-neighbour search over PDQ hashes with faiss.

Measured on 1M random 256-bit codes (2 CPU cores, faiss 1.15): ``IndexBinaryFlat`` answers
about 830 single k=1 queries/s on one thread and 1,500/s in batches of 256 on two;
``IndexBinaryMultiHash`` (16 × 16-bit, nflip=1 — exact up to distance 31) did 610/s and
1,150/s and took 3.5 s to build; 8 × 32-bit (nflip=3) was slower still. Real PDQ hashes are
less uniform than random ones, which only makes hash buckets worse, so the exact brute-force
index is used: as fast, exact by construction and cheap to update. Small query batches run
on one OpenMP thread: waking the pool cost more than it saved (a single query on two threads
was 2–20× slower). ``bench/classify.py`` re-measures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import faiss
import numpy as np

from classify.hashing import PDQ_BITS, pdq_to_bytes

# Below this many queries per call, one thread; above, faiss's default (all cores).
_PARALLEL_QUERIES = 16
_MAX_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True, slots=True)
class PdqHit:
    """The nearest indexed hash to a query."""

    key: str
    distance: int


class PdqIndex:
    """PDQ hashes keyed by a string, searchable by Hamming distance.

    Thread-safe: the engine updates it from the event loop (table subscription) and
    searches it from worker threads.
    """

    def __init__(self) -> None:
        self._index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(PDQ_BITS))
        self._ids: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._next_id = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str, pdq_hex: str) -> None:
        """Index ``pdq_hex`` under ``key``, replacing what ``key`` had."""
        self.add_many([(key, pdq_hex)])

    def add_many(self, entries: list[tuple[str, str]]) -> None:
        """Index many ``(key, pdq_hex)`` pairs in one faiss call (start-up loads)."""
        if not entries:
            return
        with self._lock:
            stale = [self._ids[key] for key, _ in entries if key in self._ids]
            if stale:
                self._remove_ids(stale)
            codes = np.stack([pdq_to_bytes(pdq) for _, pdq in entries])
            ids = np.arange(self._next_id, self._next_id + len(entries), dtype=np.int64)
            self._next_id += len(entries)
            self._index.add_with_ids(codes, ids)
            for (key, _), id_ in zip(entries, ids.tolist(), strict=True):
                self._ids[key] = id_
                self._keys[id_] = key

    def remove(self, key: str) -> None:
        """Drop ``key`` if indexed (faiss shifts the flat array: rare, O(n))."""
        with self._lock:
            id_ = self._ids.get(key)
            if id_ is not None:
                self._remove_ids([id_])

    def _remove_ids(self, ids: list[int]) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[arg-type]
        for id_ in ids:
            key = self._keys.pop(id_)
            del self._ids[key]

    def search(self, pdq_hexes: list[str], max_distance: int) -> list[PdqHit | None]:
        """For each query, the nearest indexed hash within ``max_distance``, else None."""
        if not pdq_hexes:
            return []
        queries = np.stack([pdq_to_bytes(pdq) for pdq in pdq_hexes])
        with self._lock:
            if self._index.ntotal == 0:
                return [None] * len(pdq_hexes)
            faiss.omp_set_num_threads(1 if len(queries) < _PARALLEL_QUERIES else _MAX_THREADS)
            distances, ids = self._index.search(queries, 1)
            keys = [self._keys.get(int(id_)) for id_ in ids[:, 0]]
        hits: list[PdqHit | None] = []
        for distance, key in zip(distances[:, 0].tolist(), keys, strict=True):
            ok = key is not None and distance <= max_distance
            hits.append(PdqHit(key, int(distance)) if ok and key is not None else None)
        return hits
