"""Notification payloads exactly as each store sends them (PROTOCOLS.md, "S3 event notifications").

Field layouts are copied from the stores' documented examples; only bucket, key, size, eTag,
version and ids vary. Keys are passed *decoded*; each builder encodes them the way its store
does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import quote_plus


def minio_escape(key: str) -> str:
    """MinIO query-escapes the key: ``/`` → ``%2F``, space → ``+`` (Go url.QueryEscape)."""
    return quote_plus(key, safe="")


def aws_escape(key: str) -> str:
    """AWS form-URL-encodes the key: space → ``+``, ``/`` kept."""
    return quote_plus(key, safe="/")


def minio_record(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    event: str = "s3:ObjectCreated:Put",
    sequencer: str = "17A6F2B3C4D5E6F7",
    content_type: str = "image/jpeg",
    version_id: str | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": minio_escape(key),
        "size": size,
        "eTag": etag,
        "contentType": content_type,
        "userMetadata": {"content-type": content_type},
        "sequencer": sequencer,
    }
    if version_id:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {
            "principalId": "minioadmin",
            "region": "",
            "sourceIPAddress": "172.17.0.1",
        },
        "responseElements": {
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
            "x-amz-request-id": "17A6F2B3C4D5E6F8",
            "x-minio-deployment-id": "c7ae5ec6-3a0d-4a43-9d51-a4c3f8f1e2b1",
            "x-minio-origin-endpoint": "http://172.17.0.2:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "172.17.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"},
    }


def minio_event(bucket: str, key: str, **kw: Any) -> bytes:
    """The MinIO envelope ``{"EventName", "Key", "Records": [one]}`` (Kafka value, webhook body)."""
    record = minio_record(bucket, key, **kw)
    return json.dumps(
        {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [record]}
    ).encode()


def minio_kafka_key(bucket: str, key: str) -> bytes:
    return f"{bucket}/{key}".encode()


def aws_record(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    event: str = "ObjectCreated:Put",
    sequencer: str = "0055AED6DCD90281E5",
    version_id: str | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": aws_escape(key),
        "size": size,
        "eTag": etag,
        "sequencer": sequencer,
    }
    if version_id:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "pictguard",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def aws_event(bucket: str, key: str, **kw: Any) -> bytes:
    return json.dumps({"Records": [aws_record(bucket, key, **kw)]}).encode()


def aws_test_event(bucket: str) -> bytes:
    return json.dumps(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2024-05-01T12:00:00.089Z",
            "Bucket": bucket,
            "RequestId": "5582815E1AEA5ADF",
            "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
        }
    ).encode()


def sns_wrap(message: bytes) -> bytes:
    """An SNS Notification envelope as SQS receives it without raw message delivery."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:pictguard-uploads",
            "Subject": "Amazon S3 Notification",
            "Message": message.decode(),
            "Timestamp": "2024-05-01T12:00:00.123Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fU"
            "Qvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO"
            "61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:pictguard-uploads:0",
        }
    ).encode()


def eventbridge_event(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    detail_type: str = "Object Created",
    sequencer: str = "617f08299329d189",
    version_id: str | None = None,
) -> bytes:
    obj: dict[str, Any] = {
        "key": aws_escape(key),
        "size": size,
        "etag": etag,
        "sequencer": sequencer,
    }
    if version_id:
        obj["version-id"] = version_id
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2024-05-01T12:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": bucket},
                "object": obj,
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "source-ip-address": "203.0.113.7",
                "reason": "PutObject",
            },
        }
    ).encode()


def ceph_record(
    bucket: str,
    key: str,
    *,
    size: int | str,
    etag: str,
    event: str = "ObjectCreated:Put",
    event_id: str | None = None,
    etag_field: str = "eTag",
) -> dict[str, Any]:
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "default",
        "eventTime": "2024-05-01T12:00:00.124724Z",
        "eventName": event,
        "userIdentity": {"principalId": "pictrs"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {
            "x-amz-request-id": "503a4c37-85eb-47cd-8681-2817e80b4281.5330.903595",
            "x-amz-id-2": "14d2-zone1-zonegroup1",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "pictguard",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "pictrs"},
                "arn": f"arn:aws:s3:default::{bucket}",
                "id": "503a4c37-85eb-47cd-8681-2817e80b4281.5332.38",
            },
            "object": {
                # Ceph sends the key raw, not encoded.
                "key": key,
                "size": size,
                etag_field: etag,
                "versionId": "",
                "sequencer": "F7E6D75DC742D108",
                "metadata": [],
                "tags": [],
            },
        },
        "eventId": event_id or f"1714564800.124724.{uuid.uuid4().hex}",
        "opaqueData": "",
    }


def ceph_event(bucket: str, key: str, **kw: Any) -> bytes:
    return json.dumps({"Records": [ceph_record(bucket, key, **kw)]}).encode()


B2_VERSION_ID = (
    "4_zaea8c5bc362ef55b8f5b0713_f117c7bd5d6c6597c_d20240501_m120000_c004_v0402014_t0002"
    "_u01714564800123"
)


def b2_event(
    bucket: str,
    key: str,
    *,
    size: int,
    version_id: str | None = None,
    event_type: str = "b2:ObjectCreated:Upload",
    event_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    return {
        "accountId": "e85c6a500333",
        "bucketId": "aea8c5bc362ef55b8f5b0713",
        "bucketName": bucket,
        "eventId": event_id or uuid.uuid4().hex,
        # Now by default: the receiver refuses events outside ingest.webhook.b2_max_age_s.
        "eventTimestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "eventType": event_type,
        "eventVersion": 1,
        "matchedRuleName": "pictguard",
        "objectName": key,
        "objectSize": size,
        "objectVersionId": version_id or B2_VERSION_ID,
    }


def b2_body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def b2_test_body() -> bytes:
    return b2_body(
        {
            "accountId": "e85c6a500333",
            "bucketId": "aea8c5bc362ef55b8f5b0713",
            "bucketName": "pictures",
            "eventId": uuid.uuid4().hex,
            "eventTimestamp": int(time.time() * 1000),
            "eventType": "b2:TestEvent",
            "eventVersion": 1,
            "matchedRuleName": "pictguard",
        }
    )
