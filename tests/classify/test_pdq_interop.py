"""pictguard's PDQ stays interoperable with the reference (ThreatExchange/HMA, pdqhash).

A 60-image version of ``bench/classify.py --pdq-interop`` (1,000 images).
"""

from __future__ import annotations

import numpy as np

from tests import media
from tests.classify import pdq_corpus


def test_pdq_is_within_10_bits_of_the_reference_on_full_images() -> None:
    small = tuple(size for size in pdq_corpus.SIZES if max(size) <= 1280)  # for speed
    samples = list(pdq_corpus.corpus(60, seed=7, sizes=small))
    assert {sample.kind for sample in samples} == set(pdq_corpus.KINDS)
    distances = pdq_corpus.interop_distances(samples)
    assert (distances <= 10).mean() >= 0.99, np.bincount(distances)
    assert np.median(distances) <= 4


def test_no_near_duplicate_the_reference_matches_is_lost() -> None:
    originals = [media.photo_jpeg(200 + i, 900, 675) for i in range(6)]
    originals += [media.screenshot_png(300 + i, 800, 600) for i in range(2)]
    (recall,) = pdq_corpus.near_duplicate_recall(originals, seed=7)
    # 8 originals × 8 copies (tests/media.py near_duplicates); most are within reach of PDQ.
    assert recall.pairs == 64 and recall.reference >= 40
    assert recall.lost == ()
