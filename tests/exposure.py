"""Bucket policies and ACLs that make a bucket (or part of it) public, for exposure tests."""

from __future__ import annotations

import json
from typing import Any


def statement(
    bucket: str,
    *,
    action: Any = "s3:GetObject",
    resource: Any = None,
    principal: Any = "*",
    effect: str = "Allow",
    **extra: Any,
) -> dict[str, Any]:
    """One policy statement; by default an anonymous GetObject on every key."""
    body: dict[str, Any] = {
        "Effect": effect,
        "Principal": principal,
        "Action": action,
        "Resource": resource if resource is not None else f"arn:aws:s3:::{bucket}/*",
    }
    body.update(extra)
    return body


def policy(*statements: dict[str, Any]) -> str:
    """A bucket policy document holding ``statements``."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def make_public(s3: Any, bucket: str, how: str) -> None:
    """Expose ``bucket`` the way pict-rs and media hosts commonly do.

    ``how``: ``acl`` (canned public-read), ``policy`` (anonymous s3:GetObject), or a policy
    spelled with a wildcard action the old check missed (``get-star``: ``s3:Get*``,
    ``getobject-star``: ``s3:GetObject*``, ``upper``: ``S3:GetObject``, ``star``: ``*``,
    ``aws-list``: principal ``{"AWS": ["*"]}`` as MinIO's ``mc anonymous set download``
    writes it).
    """
    if how == "acl":
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
        return
    actions = {
        "policy": "s3:GetObject",
        "get-star": "s3:Get*",
        "getobject-star": ["s3:ListBucket", "s3:GetObject*"],
        "upper": "S3:GetObject",
        "star": "*",
        "aws-list": ["s3:GetObject"],
    }
    principal: Any = {"AWS": ["*"]} if how == "aws-list" else "*"
    s3.put_bucket_policy(
        Bucket=bucket, Policy=policy(statement(bucket, action=actions[how], principal=principal))
    )
