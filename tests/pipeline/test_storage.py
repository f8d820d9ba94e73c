"""Storage against the moto S3 server and local folders: listing, caps, copies, errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import S3Settings
from pipeline.storage import LocationNotFound, ObjectTooLarge, StorageError
from pipeline.storage.locations import Stores, parse_location
from tests.servers import S3Server


def stores_for(s3: S3Server) -> Stores:
    return Stores(
        S3Settings(endpoint_url=s3.endpoint, access_key_id="testing", secret_access_key="testing")
    )


async def test_large_objects_arrive_whole(s3_server: S3Server, bucket: str) -> None:
    client: Any = s3_server.client()
    blob = os.urandom(3 * 1024 * 1024 + 17)  # several network reads
    client.put_object(Bucket=bucket, Key="big.bin", Body=blob)
    stores = stores_for(s3_server)
    try:
        store = stores.open("s3", bucket)  # type: ignore[arg-type]
        assert await store.get("big.bin", 10 * 1024 * 1024) == blob
        with pytest.raises(ObjectTooLarge):
            await store.get("big.bin", 1024 * 1024)
    finally:
        await stores.close()


async def test_listing_is_paginated_and_resumable(s3_server: S3Server, bucket: str) -> None:
    client: Any = s3_server.client()
    for i in range(1100):  # more than one 1000-key page
        client.put_object(Bucket=bucket, Key=f"p/{i:05d}", Body=b"x")
    stores = stores_for(s3_server)
    try:
        store = stores.open("s3", bucket)  # type: ignore[arg-type]
        keys = [o.key async for o in store.list("p/")]
        assert keys == [f"p/{i:05d}" for i in range(1100)]
        after = [o.key async for o in store.list("p/", start_after="p/01049")]
        assert after == [f"p/{i:05d}" for i in range(1050, 1100)]
        with pytest.raises(LocationNotFound, match="not found"):
            await stores.open("s3", "no-such-bucket-x").check()  # type: ignore[arg-type]
    finally:
        await stores.close()


async def test_local_listing_matches_s3_order(tmp_path: Path) -> None:
    for name in ["a.txt", "a/b", "a/c/d", "b", "a-z"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    stores = Stores(S3Settings())
    store = stores.for_location(parse_location(str(tmp_path)))
    keys = [o.key async for o in store.list()]
    assert keys == sorted(keys) == ["a-z", "a.txt", "a/b", "a/c/d", "b"]
    assert [o.key async for o in store.list(start_after="a.txt")] == ["a/b", "a/c/d", "b"]
    with pytest.raises(StorageError, match="escapes"):
        await store.get("../outside", 10)
