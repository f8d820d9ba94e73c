"""Each store's notification shape and key encoding, as PROTOCOLS.md states them."""

from __future__ import annotations

import json

import pytest

from ingest.sources import parse
from ingest.sources.b2 import sign, signature_valid
from tests.ingest import payloads as p

ETAG = "d41d8cd98f00b204e9800998ecf8427e"


def only_event(result):  # type: ignore[no-untyped-def]
    assert result.error is None, result.error
    assert len(result.events) == 1
    return result.events[0]


# -- MinIO -----------------------------------------------------------------------------


def test_minio_key_is_query_escaped_and_decoded() -> None:
    body = p.minio_event("pics", "media/2024/my photo+1.jpg", size=123, etag=ETAG)
    record = json.loads(body)["Records"][0]
    assert record["s3"]["object"]["key"] == "media%2F2024%2Fmy+photo%2B1.jpg"
    assert record["eventVersion"] == "2.0"
    event = only_event(parse(body, source="minio"))
    assert (event.bucket, event.key) == ("pics", "media/2024/my photo+1.jpg")
    assert (event.size, event.etag, event.content_type) == (123, ETAG, "image/jpeg")
    assert event.sequencer == "17A6F2B3C4D5E6F7"  # MinIO's sequencer orders writes
    assert event.event_name == "s3:ObjectCreated:Put"


def test_minio_removal_and_metadata_events_are_not_scanned() -> None:
    removed = parse(
        p.minio_event("pics", "a/b.jpg", size=0, etag=ETAG, event="s3:ObjectRemoved:Delete"),
        source="minio",
    )
    assert removed.events == [] and removed.error is None
    assert [(r.bucket, r.key) for r in removed.removals] == [("pics", "a/b.jpg")]
    tagged = parse(
        p.minio_event("pics", "a/b.jpg", size=1, etag=ETAG, event="s3:ObjectCreated:PutTagging"),
        source="minio",
    )
    assert tagged.events == [] and tagged.ignored and tagged.error is None
    accessed = parse(
        p.minio_event("pics", "a/b.jpg", size=1, etag=ETAG, event="s3:ObjectAccessed:Get"),
        source="minio",
    )
    assert accessed.events == [] and accessed.ignored


def test_minio_quoted_etag_and_version() -> None:
    body = p.minio_event("pics", "x.png", size=5, etag=f'"{ETAG}"', version_id="v-1")
    event = only_event(parse(body, source="minio"))
    assert event.etag == ETAG and event.version_id == "v-1"


# -- AWS: raw, TestEvent, SNS, EventBridge ------------------------------------------------


def test_aws_key_space_as_plus() -> None:
    body = p.aws_event("pics", "user uploads/Happy Face.jpg", size=1024, etag=ETAG)
    assert json.loads(body)["Records"][0]["s3"]["object"]["key"] == "user+uploads/Happy+Face.jpg"
    event = only_event(parse(body, source="aws"))
    assert event.key == "user uploads/Happy Face.jpg"
    assert event.event_name == "ObjectCreated:Put"
    assert event.sequencer == "0055AED6DCD90281E5"


def test_aws_test_event_is_ignored_not_an_error() -> None:
    result = parse(p.aws_test_event("pics"), source="aws")
    assert result.events == [] and result.error is None
    assert result.ignored and "s3:TestEvent" in result.ignored[0]


def test_sns_wrapped_records_and_test_event() -> None:
    inner = p.aws_event("pics", "a b/c.jpg", size=7, etag=ETAG)
    event = only_event(parse(p.sns_wrap(inner), source="aws"))
    assert (event.bucket, event.key, event.size) == ("pics", "a b/c.jpg", 7)
    test = parse(p.sns_wrap(p.aws_test_event("pics")), source="aws")
    assert test.events == [] and test.ignored and test.error is None


def test_sns_subscription_confirmation_is_dead_lettered_with_advice() -> None:
    body = json.dumps(
        {"Type": "SubscriptionConfirmation", "TopicArn": "arn:aws:sns:x", "Message": "hi"}
    ).encode()
    result = parse(body, source="aws")
    assert result.error is not None and "SQS" in result.error.detail


def test_eventbridge_object_created() -> None:
    body = p.eventbridge_event("pics", "dir/my file.webp", size=5, etag=ETAG, version_id="IYV3")
    event = only_event(parse(body, source="aws"))
    assert (event.bucket, event.key, event.size) == ("pics", "dir/my file.webp", 5)
    assert (event.etag, event.version_id, event.sequencer) == (ETAG, "IYV3", "617f08299329d189")


def test_eventbridge_deleted_and_other_types() -> None:
    deleted = parse(
        p.eventbridge_event("pics", "k.jpg", size=0, etag=ETAG, detail_type="Object Deleted"),
        source="aws",
    )
    assert deleted.events == [] and len(deleted.removals) == 1
    tags = parse(
        p.eventbridge_event("pics", "k.jpg", size=0, etag=ETAG, detail_type="Object Tags Added"),
        source="aws",
    )
    assert tags.events == [] and tags.ignored and tags.error is None


# -- Ceph -----------------------------------------------------------------------------


def test_ceph_key_is_raw_size_may_be_a_string_and_etag_spelling() -> None:
    body = p.ceph_event("pics", "my photo+%20.jpg", size="2048", etag=ETAG, event_id="ev-1")
    event = only_event(parse(body, source="ceph"))
    assert event.key == "my photo+%20.jpg"  # not decoded: Ceph sends keys raw
    assert event.size == 2048
    assert event.event_id == "ev-1"
    assert event.sequencer is None  # not orderable on Ceph
    lower = p.ceph_event("pics", "k.jpg", size=1, etag=ETAG, etag_field="etag")
    assert only_event(parse(lower, source="ceph")).etag == ETAG


def test_auto_detection_on_the_raw_topic_keeps_each_stores_key_encoding() -> None:
    minio = only_event(parse(p.minio_event("b", "a b/c+d.jpg", size=1, etag=ETAG), source="auto"))
    ceph = only_event(parse(p.ceph_event("b", "a b/c+d.jpg", size=1, etag=ETAG), source="auto"))
    assert minio.key == ceph.key == "a b/c+d.jpg"
    bare_minio = json.dumps({"Records": [p.minio_record("b", "x y.jpg", size=1, etag=ETAG)]})
    assert only_event(parse(bare_minio.encode(), source="auto")).key == "x y.jpg"


def test_auto_refuses_to_guess_an_unknown_event_source() -> None:
    record = p.ceph_record("b", "k.jpg", size=1, etag=ETAG)
    record["eventSource"] = "garage:s3"
    result = parse(json.dumps({"Records": [record]}).encode(), source="auto")
    assert result.events == [] and result.error is not None
    assert "ingest.events.format" in result.error.detail


# -- B2 -------------------------------------------------------------------------------


def test_b2_events_and_test_event() -> None:
    body = p.b2_body(
        p.b2_event("pics", "raw name+%.jpg", size=10, event_id="e1", version_id="4_z1"),
        p.b2_event("pics", "gone.jpg", size=0, event_type="b2:ObjectDeleted:Delete"),
    )
    result = parse(body, source="b2")
    assert result.error is None
    (event,) = result.events
    assert (event.key, event.size, event.version_id, event.event_id) == (
        "raw name+%.jpg",
        10,
        "4_z1",
        "e1",
    )
    assert [r.key for r in result.removals] == ["gone.jpg"]
    test = parse(p.b2_test_body(), source="b2")
    assert test.events == [] and test.error is None and test.ignored == ["b2:TestEvent"]


def test_b2_signature() -> None:
    body = p.b2_body(p.b2_event("pics", "k.jpg", size=1))
    header = sign("s3cret-s3cret-s3cret", body)
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert signature_valid("s3cret-s3cret-s3cret", body, header)
    assert signature_valid("s3cret-s3cret-s3cret", body, "v1=00, " + header)
    assert not signature_valid("other-secret", body, header)
    assert not signature_valid("s3cret-s3cret-s3cret", body + b" ", header)


# -- malformed input --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["minio", "ceph", "aws", "b2", "auto"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "unknown_shape"),
        (b'{"hello": "world"}', "unknown_shape"),
        (b"[" * 100000, "not_json"),
    ],
)
def test_malformed_payloads_are_errors_never_exceptions(
    source: str, body: bytes, reason: str
) -> None:
    result = parse(body, source=source)  # type: ignore[arg-type]
    assert result.events == []
    assert result.error is not None and result.error.reason == reason


def test_one_bad_record_does_not_spoil_the_good_ones() -> None:
    good = p.aws_record("pics", "ok.jpg", size=1, etag=ETAG)
    bad = p.aws_record("pics", "bad.jpg", size=1, etag=ETAG)
    bad["s3"]["object"]["size"] = "lots"
    result = parse(json.dumps({"Records": [good, bad]}).encode(), source="aws")
    assert [e.key for e in result.events] == ["ok.jpg"]
    assert result.error is not None and result.error.reason == "invalid_record"
    assert "Records[1]" in result.error.detail


def test_lone_surrogate_keys_are_rejected() -> None:
    record = p.ceph_record("pics", "x", size=1, etag=ETAG)
    text = json.dumps({"Records": [record]}).replace('"key": "x"', '"key": "\\ud800"')
    result = parse(text.encode(), source="ceph")
    assert result.events == [] and result.error is not None
