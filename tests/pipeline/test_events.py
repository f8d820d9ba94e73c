"""Event contracts: JSON on the wire, versioned, unknown versions rejected clearly."""

from __future__ import annotations

import json

import pytest

from pipeline.events import (
    ActionOutcome,
    ActionType,
    DeadLetter,
    Decision,
    EnforcementAction,
    ObjectRef,
    ScanRequest,
    SchemaError,
    Verdict,
    decode,
    encode,
)

REF = ObjectRef(store="s3", bucket="pics", key="a b/c.jpg", etag="e1", size=3)


@pytest.mark.parametrize(
    "event",
    [
        ScanRequest(object=REF),
        ScanRequest(content=b"\x00\xffbytes", content_type="image/png", reply_to="replies.x"),
        Verdict(request_id="r", object=REF, decision=Decision.FLAG_CSAM, scores={"sexual": 0.3}),
        EnforcementAction(
            verdict_id="v",
            object=REF,
            decision=Decision.FLAG_CSAM,
            action=ActionType.QUARANTINE,
            outcome=ActionOutcome.DONE,
        ),
        DeadLetter(source_topic="t", reason="malformed_event", payload=b"{oops"),
    ],
)
def test_round_trip(event: ScanRequest | Verdict | EnforcementAction | DeadLetter) -> None:
    wire = encode(event)
    assert json.loads(wire)["schema_version"] == 1
    assert decode(wire, type(event)) == event


def test_object_id_is_stable() -> None:
    assert REF.id == "s3://pics/a b/c.jpg"
    assert (
        ObjectRef(store="file", bucket="/srv/media/", key="x/y.png").id
        == "file:///srv/media/x/y.png"
    )


def test_unknown_version_is_rejected_with_advice() -> None:
    raw = json.loads(encode(ScanRequest(object=REF)))
    raw["schema_version"] = 2
    with pytest.raises(
        SchemaError, match=r"schema_version 2 is not supported.*same pictguard version"
    ):
        decode(json.dumps(raw).encode(), ScanRequest)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (encode(Verdict(request_id="r", decision=Decision.ALLOW)), "expected a scan_request"),
        (b'{"schema_version": 1, "type": "scan_request", "lane": "fast"}', "lane"),
    ],
)
def test_malformed_events_raise_schema_error(data: bytes, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        decode(data, ScanRequest)


def test_hash_list_decisions_are_told_from_model_ones() -> None:
    """Review bulk actions, the report warning and platform bans all ask this one question."""
    from pipeline.events import Decision, Findings

    def flagged(matched: str | None) -> Findings:
        return Findings(decision=Decision.FLAG_CSAM, matched=matched)

    assert flagged("blocklist:sha256").by_hash_list
    assert flagged("blocklist:pdq:12 (feed: instance-a.example)").by_hash_list
    assert flagged("hma:pdq:4 (bank: NCMEC, content: 7)").by_hash_list
    assert not flagged(None).by_hash_list
    assert not Findings(decision=Decision.ALLOW, matched="allowlist:sha256").by_hash_list
