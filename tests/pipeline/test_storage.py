"""Storage against the moto S3 server and local folders: listing, caps, copies, errors; the
contracts both stores keep (copy with metadata, content type, retention, no overwrite, eTag
checks, hidden prefixes), the one object-id parser, key checks, the scope, and exposure
checks: bucket policies evaluated the way S3 does, against moto too."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.events import ObjectRef, StoreKind
from pipeline.settings import S3Settings
from pipeline.storage import (
    LocationNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectStore,
    ObjectTooLarge,
    Retention,
    StorageError,
)
from pipeline.storage.exposure import Exposure, exposure, folder_exposure, policy_allows_public_read
from pipeline.storage.locations import (
    Location,
    Scope,
    Stores,
    UnsafePath,
    check_key,
    check_path_text,
    parse_location,
    parse_object_id,
    resolve_key,
)
from tests.exposure import make_public, policy, statement
from tests.media import photo_jpeg, webp_image
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


B = "media-bucket"
ANY_KEY = f"arn:aws:s3:::{B}/*"


def allow(**kw: Any) -> dict[str, Any]:
    return statement(B, **kw)


# (why, statements, prefix, public?)
POLICIES: list[tuple[str, list[dict[str, Any]], str, bool]] = [
    ("plain GetObject", [allow()], "q/", True),
    ("s3:Get*", [allow(action="s3:Get*")], "q/", True),
    ("s3:GetObject*", [allow(action="s3:GetObject*")], "q/", True),
    ("upper-case S3:GetObject", [allow(action="S3:GetObject")], "q/", True),
    ("lower-case s3:getobject", [allow(action="s3:getobject")], "q/", True),
    ("any action *", [allow(action="*")], "q/", True),
    ("s3:*", [allow(action="s3:*")], "q/", True),
    ("? wildcard", [allow(action="s3:GetObjec?")], "q/", True),
    ("GetObjectVersion reads the same bytes", [allow(action="s3:GetObjectVersion")], "q/", True),
    ("only PutObject", [allow(action="s3:PutObject")], "q/", False),
    ("only ListBucket", [allow(action="s3:ListBucket", resource=f"arn:aws:s3:::{B}")], "q/", False),
    ("NotAction without reads", [allow(action=None, NotAction="s3:Delete*")], "q/", True),
    ("NotAction excluding reads", [allow(action=None, NotAction="s3:Get*")], "q/", False),
    ('Principal {"AWS": "*"}', [allow(principal={"AWS": "*"})], "q/", True),
    ('Principal {"AWS": ["*"]}', [allow(principal={"AWS": ["*"]})], "q/", True),
    ("one account", [allow(principal={"AWS": "arn:aws:iam::123456789012:root"})], "q/", False),
    (
        "NotPrincipal",
        [allow(principal=None, NotPrincipal={"AWS": "arn:aws:iam::1:root"})],
        "q/",
        True,
    ),
    ("another prefix only", [allow(resource=f"arn:aws:s3:::{B}/media/*")], "q/", False),
    ("the prefix itself", [allow(resource=f"arn:aws:s3:::{B}/q/*")], "q/", True),
    ("a wildcard reaching into it", [allow(resource=f"arn:aws:s3:::{B}/*.jpg")], "q/", True),
    ("q* also covers q/", [allow(resource=f"arn:aws:s3:::{B}/q*")], "q/", True),
    ("resource *", [allow(resource="*")], "q/", True),
    ("another bucket", [allow(resource="arn:aws:s3:::other/*")], "q/", False),
    (
        "NotResource elsewhere",
        [allow(resource=None, NotResource="arn:aws:s3:::other/*")],
        "q/",
        True,
    ),
    (
        "NotResource the prefix",
        [allow(resource=None, NotResource=f"arn:aws:s3:::{B}/q/*")],
        "q/",
        False,
    ),
    (
        "Deny on the prefix wins",
        [allow(), statement(B, effect="Deny", action="s3:*", resource=f"arn:aws:s3:::{B}/q/*")],
        "q/",
        False,
    ),
    (
        "Deny on part of the prefix does not",
        [allow(), statement(B, effect="Deny", resource=f"arn:aws:s3:::{B}/q/old/*")],
        "q/",
        True,
    ),
    (
        "Deny of another action does not",
        [allow(), statement(B, effect="Deny", action="s3:PutObject")],
        "q/",
        True,
    ),
    (
        "Deny everyone outside a VPC endpoint",
        [
            allow(),
            statement(
                B,
                effect="Deny",
                action="s3:*",
                Condition={"StringNotEquals": {"aws:SourceVpce": "vpce-1a2b3c"}},
            ),
        ],
        "q/",
        False,
    ),
    (
        "Referer condition restricts nothing",
        [allow(Condition={"StringLike": {"aws:Referer": "https://example.org/*"}})],
        "q/",
        True,
    ),
    (
        "SourceIp of one network",
        [allow(Condition={"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}})],
        "q/",
        False,
    ),
    (
        "SourceIp of the whole internet",
        [allow(Condition={"IpAddress": {"aws:SourceIp": ["0.0.0.0/0"]}})],
        "q/",
        True,
    ),
    (
        "NotIpAddress lets everyone else in",
        [allow(Condition={"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}})],
        "q/",
        True,
    ),
    (
        "PrincipalOrgID",
        [allow(Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}})],
        "q/",
        False,
    ),
    (
        "IfExists passes for anonymous callers",
        [allow(Condition={"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}})],
        "q/",
        True,
    ),
    (
        "a wildcard value restricts nothing",
        [allow(Condition={"StringLike": {"aws:PrincipalArn": "*"}})],
        "q/",
        True,
    ),
    ("Effect spelled in lower case", [allow(effect="allow")], "q/", True),
    ("whole-bucket prefix", [allow()], "", True),
]


@pytest.mark.parametrize(
    ("statements", "prefix", "public"),
    [pytest.param(st, prefix, public, id=why) for why, st, prefix, public in POLICIES],
)
def test_bucket_policy_read_as_s3_reads_it(
    statements: list[dict[str, Any]], prefix: str, public: bool
) -> None:
    cleaned = [{k: v for k, v in s.items() if v is not None} for s in statements]
    assert policy_allows_public_read(policy(*cleaned), B, prefix) is public


def test_a_single_statement_object_and_garbage() -> None:
    assert policy_allows_public_read({"Statement": allow()}, B, "q/")
    with pytest.raises(ValueError):
        policy_allows_public_read("{not json", B, "q/")


@pytest.mark.parametrize("how", ["acl", "policy", "get-star", "upper", "star", "aws-list"])
async def test_exposure_of_a_real_bucket(s3_server: S3Server, how: str) -> None:
    s3: Any = s3_server.client()
    name = f"x-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    stores = Stores(_s3(s3_server))
    try:
        store = stores.open(StoreKind.S3, name)
        assert (await exposure(store, "q/")).exposure is Exposure.PRIVATE
        make_public(s3, name, how)
        report = await exposure(store, "q/")
        assert report.exposure is Exposure.PUBLIC, report
        assert f"s3://{name}/q/ is publicly readable" in report.message()
        # All four public access block settings make it private whatever else is set.
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        assert (await exposure(store, "q/")).exposure is Exposure.PRIVATE
    finally:
        await stores.close()


async def test_a_policy_public_for_media_only_leaves_a_quarantine_prefix_private(
    s3_server: S3Server,
) -> None:
    """pict-rs-style: the bucket serves media/ to everyone; quarantine/ is not covered."""
    s3: Any = s3_server.client()
    name = f"x-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(
        Bucket=name,
        Policy=policy(statement(name, action="s3:Get*", resource=f"arn:aws:s3:::{name}/media/*")),
    )
    stores = Stores(_s3(s3_server))
    try:
        store = stores.open(StoreKind.S3, name)
        assert (await exposure(store, "media/")).exposure is Exposure.PUBLIC
        assert (await exposure(store, "quarantine/")).exposure is Exposure.PRIVATE
    finally:
        await stores.close()


def test_folder_exposure(tmp_path: Path) -> None:
    created = folder_exposure(tmp_path, "q/")
    assert created.exposure is Exposure.PRIVATE
    assert (tmp_path / "q").stat().st_mode & 0o777 == 0o700
    for mode, public in ((0o700, False), (0o750, False), (0o701, True), (0o704, True)):
        (tmp_path / "q").chmod(mode)
        report = folder_exposure(tmp_path, "q/")
        assert (report.exposure is Exposure.PUBLIC) is public, oct(mode)
    assert "chmod o-rwx" in report.message()


# -- the store contract, on both stores ------------------------------------------------------


@pytest.fixture(params=["s3", "folder"])
async def pair(request: Any, s3_server: S3Server, tmp_path: Path) -> Any:
    """(source, target, stores) of one kind: two buckets, or two folders."""
    stores = Stores(_s3(s3_server))
    if request.param == "s3":
        s3: Any = s3_server.client()
        names = [f"c-{uuid.uuid4().hex[:10]}" for _ in range(2)]
        for name in names:
            s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        source, target = (stores.open(StoreKind.S3, n) for n in names)
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        source = stores.open(StoreKind.FILE, str(tmp_path / "a"))
        target = stores.open(StoreKind.FILE, str(tmp_path / "b"))
    yield source, target
    await stores.close()


async def test_copy_keeps_bytes_metadata_and_content_type_and_never_overwrites(pair: Any) -> None:
    source, target = pair
    data = photo_jpeg(71, 640, 480)
    await source.put("in/photo.jpg", data, {"owner": "u1"}, content_type="image/jpeg")
    info = await source.head("in/photo.jpg")
    assert info is not None and info.etag
    await source.copy_to(
        "in/photo.jpg",
        target,
        "out/photo.jpg",
        {"pictguard-note": "x"},
        content_type="image/jpeg",
        if_match=info.etag,
        overwrite=False,
    )
    assert await target.get("out/photo.jpg", 10**7) == data
    assert await target.metadata("out/photo.jpg") == {"pictguard-note": "x"}
    copied = await target.head("out/photo.jpg")
    assert copied is not None
    if target.kind is StoreKind.S3:
        assert copied.content_type == "image/jpeg"
    other = webp_image(72, 320, 240)
    await source.put("in/other.webp", other)
    with pytest.raises(ObjectExists):
        await source.copy_to("in/other.webp", target, "out/photo.jpg", {}, overwrite=False)
    with pytest.raises(ObjectExists):
        await target.put("out/photo.jpg", other, overwrite=False)
    assert await target.get("out/photo.jpg", 10**7) == data  # still the first copy
    with pytest.raises(ObjectChanged):
        await source.copy_to("in/other.webp", target, "out/x.webp", {}, if_match="0" * 32)
    assert await target.head("out/x.webp") is None


async def test_retention_is_s3_only(pair: Any) -> None:
    source, target = pair
    await source.put("k.jpg", photo_jpeg(73, 320, 240))
    until = datetime.now(UTC) + timedelta(days=3)
    if target.kind is StoreKind.S3:
        assert await target.retention_enabled()
        await source.copy_to("k.jpg", target, "k.jpg", {}, retention=Retention(until))
        assert (await target.head("k.jpg")) is not None
    else:
        assert not await target.retention_enabled()
        with pytest.raises(StorageError, match="S3 only"):
            await source.copy_to("k.jpg", target, "k.jpg", {}, retention=Retention(until))


async def test_listings_leave_the_hidden_prefix_out(pair: Any) -> None:
    source: ObjectStore = pair[0]
    for key in ("a.jpg", "quarantine/s3/b/a.jpg", "quarantine2/x.jpg", "z/quarantine/y.jpg"):
        await source.put(key, b"x")
    source.hidden_prefixes = ("quarantine/",)
    assert [i.key async for i in source.list()] == [
        "a.jpg",
        "quarantine2/x.jpg",
        "z/quarantine/y.jpg",
    ]


# -- object ids, keys and the scope --------------------------------------------------------


def test_one_parser_for_object_ids(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "2024").mkdir(parents=True)
    (media / "2024" / "a.jpg").write_bytes(b"x")
    ref = parse_object_id("s3://bucket/aa/bb.webp")
    assert (ref.store, ref.bucket, ref.key) == (StoreKind.S3, "bucket", "aa/bb.webp")
    for bad in ("s3://ab/k", "s3://bucket", "s3://bucket/", "gs://x/y", "file://"):
        with pytest.raises(StorageError):
            parse_object_id(bad)
    under_root = parse_object_id(f"file://{media}/2024/a.jpg", [media])
    assert (under_root.bucket, under_root.key) == (str(media.resolve()), "2024/a.jpg")
    assert parse_object_id(str(media / "2024" / "a.jpg"), [media]) == under_root
    # ".." is resolved, so it cannot stay inside a root it left.
    escaped = parse_object_id(f"file://{media}/../secret.txt", [media])
    assert (escaped.bucket, escaped.key) == (str(tmp_path.resolve()), "secret.txt")
    # The id round-trips (ObjectRef.id is its inverse).
    assert parse_object_id(under_root.id, [media]) == under_root


def test_paths_and_keys_that_leave_their_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("s")
    os.symlink(tmp_path / "secret.txt", root / "in" / "link.jpg")
    os.symlink(tmp_path, root / "up")
    assert check_key("in/a.jpg") == "in/a.jpg"
    for bad in ("../x", "in/../../x", "/etc/passwd", "", "a\0b", "a\\..\\b"):
        with pytest.raises(UnsafePath):
            check_key(bad)
    for bad in ("in/link.jpg", "up/secret.txt"):
        with pytest.raises(UnsafePath, match="symlink"):
            resolve_key(root, bad)
    assert resolve_key(root, "in/new.jpg") == (root / "in" / "new.jpg").resolve()
    with pytest.raises(UnsafePath):
        check_path_text(f"file://{root}/in/../../secret.txt")
    check_path_text(f"file://{root}/in/a.jpg")


def test_scope_allows_configured_locations_and_hides_the_quarantine(tmp_path: Path) -> None:
    media = tmp_path / "media"
    scope = Scope.of(
        ["s3://pics", "s3://shared/lemmy/", str(media)],
        quarantine=[Location(StoreKind.FILE, str(media), "quarantine/")],
    )

    def ref(store: StoreKind, bucket: str, key: str) -> ObjectRef:
        return ObjectRef(store=store, bucket=bucket, key=key)

    assert scope.refusal(ref(StoreKind.S3, "pics", "a.jpg")) is None
    assert scope.refusal(ref(StoreKind.S3, "shared", "lemmy/a.jpg")) is None
    assert "outside" in (scope.refusal(ref(StoreKind.S3, "shared", "other/a.jpg")) or "")
    assert scope.refusal(ref(StoreKind.S3, "pics-backup", "a.jpg")) is not None
    assert scope.refusal(ref(StoreKind.FILE, str(media / "sub"), "a.jpg")) is None
    assert scope.refusal(ref(StoreKind.FILE, str(tmp_path), "media2/a.jpg")) is not None
    assert scope.hidden_prefixes(StoreKind.FILE, str(media)) == ("quarantine/",)
    assert scope.hidden_prefixes(StoreKind.FILE, str(tmp_path)) == ("media/quarantine/",)
    assert scope.in_quarantine(ref(StoreKind.FILE, str(media), "quarantine/x.jpg"))
    assert not Scope().restricted and Scope().refusal(ref(StoreKind.S3, "any", "k")) is None
    assert Scope(quarantine_prefix="q/").hidden_prefixes(StoreKind.S3, "pics") == ("q/",)


def _s3(server: S3Server) -> S3Settings:
    return S3Settings(
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        path_style=True,
    )
