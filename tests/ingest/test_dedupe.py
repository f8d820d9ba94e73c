"""The dedupe window: repeats dropped, new writes kept, bounded in time and size."""

from __future__ import annotations

from ingest.dedupe import DedupeWindow, Identity, sequencer_after
from ingest.sources import ObjectEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(key: str = "a.jpg", **kw: object) -> ObjectEvent:
    fields: dict[str, object] = {"bucket": "pics", "key": key, "etag": "e1"}
    fields.update(kw)
    return ObjectEvent(**fields)  # type: ignore[arg-type]


def seen_after(window: DedupeWindow, *events: ObjectEvent) -> list[bool]:
    """Feed ``events`` in order; which of them were repeats."""
    out = []
    for event in events:
        ident = Identity.of(event)
        repeat = window.is_repeat(ident)
        out.append(repeat)
        if not repeat:
            window.remember(ident)
    return out


def test_sequencer_comparison_pads_right() -> None:
    assert sequencer_after("0055AED6DCD90281E6", "0055AED6DCD90281E5")
    assert sequencer_after("0055AED6DCD90281E5", "0055AED6DCD90281")  # longer = later
    assert not sequencer_after("0055AED6DCD90281", "0055AED6DCD9028100")  # equal once padded
    assert not sequencer_after("0055aed6dcd90281e5", "0055AED6DCD90281E5")


def test_same_object_same_etag_is_a_repeat_other_etag_is_not() -> None:
    window = DedupeWindow(60)
    assert seen_after(window, ev(), ev(), ev(etag="e2"), ev(key="b.jpg")) == [
        False,
        True,
        False,
        False,
    ]


def test_sequencer_decides_for_aws_and_minio() -> None:
    window = DedupeWindow(60)
    first = ev(sequencer="0A")
    redelivered = ev(sequencer="0A")
    stale = ev(etag="old", sequencer="09")
    rewritten_same_bytes = ev(sequencer="0B")  # deleted and uploaded again: scan again
    assert seen_after(window, first, redelivered, stale, rewritten_same_bytes) == [
        False,
        True,
        True,
        False,
    ]


def test_event_id_recognises_ceph_redelivery() -> None:
    window = DedupeWindow(60)
    assert seen_after(window, ev(event_id="x1"), ev(event_id="x1", etag=None)) == [False, True]


def test_versions_are_told_apart_by_version_id() -> None:
    window = DedupeWindow(60)
    a = ev(version_id="v1", sequencer="0A")
    b = ev(version_id="v2", sequencer="09")  # older sequencer, different version: still new
    assert seen_after(window, a, b, ev(version_id="v1", sequencer="0A")) == [False, False, True]


def test_removal_forgets_the_object() -> None:
    clock = Clock()
    window = DedupeWindow(60, clock=clock)
    ceph_like, minio_like = ev(), ev(key="m.jpg", sequencer="05")
    assert seen_after(window, ceph_like, minio_like, ev(key="b.jpg")) == [False] * 3
    clock.now += 1
    window.forget_object("pics", "a.jpg")
    window.forget_object("pics", "m.jpg")
    clock.now += 1
    # Uploaded again with the same bytes: scanned again; other objects are unaffected.
    assert seen_after(window, ceph_like, minio_like, ev(key="b.jpg")) == [False, False, True]
    assert seen_after(window, ceph_like, minio_like) == [True, True]  # remembered from then on


def test_entries_expire_and_the_window_is_bounded() -> None:
    clock = Clock()
    window = DedupeWindow(10, max_entries=3, clock=clock)
    assert seen_after(window, ev()) == [False]
    clock.now += 11
    assert seen_after(window, ev()) == [False]
    for i in range(10):
        seen_after(window, ev(key=f"k{i}", sequencer="01"))
    assert len(window) <= 9


def test_zero_window_turns_dedupe_off() -> None:
    window = DedupeWindow(0)
    assert seen_after(window, ev(), ev()) == [False, False]
