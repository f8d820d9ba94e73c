"""The fakes' contracts, over real HTTP: what later tests will rely on them to do."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.samples import image_bytes
from tests.fakes import (
    FakeHMA,
    FakeLemmy,
    FakeMastodon,
    FakePictrs,
    FilesystemStore,
    RecordingEndpoint,
    S3Store,
)
from tests.fakes.hma import pdq_signal
from tests.fakes.pictrs import PICTRS_USER_AGENT
from tests.servers import S3Server

KEY = "test-api-key"
TOKEN = {"X-Api-Token": KEY}
IDENTIFIER = re.compile(r"^(?:[0-9a-f]{2}/){10}[0-9a-f]{12}\.png$")


def upload(pictrs: FakePictrs, *images: bytes, path: str = "/image") -> httpx.Response:
    """An upload as Lemmy and lemmy-js-client send it: multipart field ``images[]``."""
    files = [("images[]", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(pictrs.url + path, files=files, timeout=30)


@pytest.fixture
def pictrs(tmp_path: Path) -> Iterator[FakePictrs]:
    with FakePictrs(FilesystemStore(tmp_path / "files"), api_key=KEY) as fake:
        yield fake


# --- pict-rs ----------------------------------------------------------------------------------


def test_pictrs_upload_stores_file_in_pictrs_layout_with_pictrs_hash(
    pictrs: FakePictrs, tmp_path: Path
) -> None:
    data = image_bytes(1)
    response = upload(pictrs, data)
    assert response.status_code == 201
    (file,) = response.json()["files"]
    assert file["details"]["content_type"] == "image/png" and file["details"]["format"] == "Image"
    identifier = httpx.get(
        f"{pictrs.url}/internal/identifier", params={"alias": file["file"]}, headers=TOKEN
    ).json()["identifier"]
    assert IDENTIFIER.match(identifier)
    assert (tmp_path / "files" / identifier).read_bytes() == data
    page = httpx.get(f"{pictrs.url}/internal/hashes", headers=TOKEN).json()["page"]
    expected = hashlib.sha256(data).hexdigest() + len(data).to_bytes(6, "big").hex() + "07"
    assert page["hashes"][0]["hex"] == expected
    assert page["hashes"][0]["aliases"] == [file["file"]]
    original = httpx.get(f"{pictrs.url}/image/original/{file['file']}")
    assert original.content == data and original.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("status", "kept"), [(200, True), (204, True), (406, False), (500, False)])
def test_pictrs_external_validation_keeps_on_2xx_and_deletes_otherwise(
    tmp_path: Path, status: int, kept: bool
) -> None:
    with (
        RecordingEndpoint(status) as validator,
        FakePictrs(
            FilesystemStore(tmp_path), external_validation=f"{validator.url}/api/v1/scan/x"
        ) as pictrs,
    ):
        data = image_bytes(2)
        response = upload(pictrs, data)
        (call,) = validator.requests
        assert call.path == "/api/v1/scan/x" and call.body == data and call.chunked
        assert "content-length" not in call.headers
        assert call.headers["content-type"] == "image/png"
        assert call.headers["user-agent"] == PICTRS_USER_AGENT
        if kept:
            assert response.status_code == 201 and len(pictrs.stored_identifiers()) == 1
        else:
            assert response.status_code == 400
            assert response.json() == {
                "msg": "Failed external validation",
                "code": "failed-external-validation",
            }
            assert pictrs.stored_identifiers() == set() and pictrs.aliases() == []


def test_pictrs_validation_timeout_or_unreachable_is_500_and_deletes(tmp_path: Path) -> None:
    with RecordingEndpoint(hold=True) as silent:
        with FakePictrs(
            FilesystemStore(tmp_path),
            external_validation=silent.url,
            external_validation_timeout=0.3,
        ) as pictrs:
            response = upload(pictrs, image_bytes(3))
            assert response.status_code == 500 and response.json()["code"] == "http-client-error"
            assert pictrs.stored_identifiers() == set()
        dead = silent.url
    with FakePictrs(FilesystemStore(tmp_path), external_validation=dead) as pictrs:
        response = upload(pictrs, image_bytes(3))
        assert response.status_code == 500 and response.json()["code"] == "http-client-error"
        assert pictrs.stored_identifiers() == set()


def test_pictrs_internal_api_wants_the_api_token(pictrs: FakePictrs, tmp_path: Path) -> None:
    alias = pictrs.seed(image_bytes(4)).alias
    refused = {"msg": "Invalid API Key", "code": "invalid-api-token"}
    for headers in ({}, {"X-Api-Token": "wrong"}):
        response = httpx.post(
            f"{pictrs.url}/internal/purge", params={"alias": alias}, headers=headers
        )
        assert (response.status_code, response.json()) == (401, refused)
    assert pictrs.aliases() == [alias]
    with FakePictrs(FilesystemStore(tmp_path / "other"), api_key=None) as keyless:
        response = httpx.get(f"{keyless.url}/internal/hashes", headers={"X-Api-Token": ""})
        assert (response.status_code, response.json()) == (401, refused)
    missing = httpx.post(
        f"{pictrs.url}/internal/purge", params={"alias": "nope.png"}, headers=TOKEN
    )
    assert missing.status_code == 404 and missing.json()["code"] == "alias-not-found"


def test_pictrs_purge_on_s3_removes_every_alias_variant_and_object(
    s3_server: S3Server, bucket: str
) -> None:
    store = S3Store(s3_server.endpoint, bucket, s3_server.access_key, s3_server.secret_key)
    with FakePictrs(store, api_key=KEY) as pictrs:
        data = image_bytes(5)
        first = upload(pictrs, data).json()["files"][0]["file"]
        second = upload(pictrs, data).json()["files"][0]["file"]  # same bytes: deduplicated
        assert len(pictrs.stored_identifiers()) == 1
        object_key = pictrs.identifier_of(first)
        head = s3_server.client().head_object(Bucket=bucket, Key=object_key)  # type: ignore[attr-defined]
        assert head["ContentType"] == "image/png"
        pictrs.add_variant(first)
        assert (
            httpx.get(
                f"{pictrs.url}/image/process.webp", params={"src": second, "thumbnail": 32}
            ).status_code
            == 200
        )
        assert len(pictrs.variants_of(first)) == 2 and len(pictrs.stored_identifiers()) == 3
        response = httpx.post(
            f"{pictrs.url}/internal/purge", params={"alias": second}, headers=TOKEN
        )
        assert response.json() == {"msg": "ok", "aliases": sorted([first, second])}
        assert pictrs.stored_identifiers() == set() and pictrs.aliases() == []
        assert httpx.get(f"{pictrs.url}/image/original/{first}").status_code == 404
        gone = httpx.get(f"{pictrs.url}/internal/aliases", params={"alias": first}, headers=TOKEN)
        assert gone.json() == {"msg": "ok", "aliases": []}


def test_pictrs_delete_keeps_the_file_until_the_last_alias_goes(pictrs: FakePictrs) -> None:
    data = image_bytes(6)
    a, b = (pictrs.seed(data).alias for _ in range(2))
    assert httpx.post(
        f"{pictrs.url}/internal/delete", params={"alias": a}, headers=TOKEN
    ).json() == {"msg": "ok"}
    assert pictrs.aliases() == [b] and len(pictrs.stored_identifiers()) == 1
    token = pictrs.delete_token_of(b)
    assert httpx.delete(f"{pictrs.url}/image/delete/wrong/{b}").status_code == 403
    assert httpx.delete(f"{pictrs.url}/image/delete/{token}/{b}").status_code == 204
    assert pictrs.stored_identifiers() == set()


def test_pictrs_hash_pages_are_newest_first_with_next_and_prev(pictrs: FakePictrs) -> None:
    seeded = [
        pictrs.seed(image_bytes(10 + i), created_ns=(1_700_000_000 + i) * 10**9) for i in range(5)
    ]
    newest_first = [s.hash_hex for s in reversed(seeded)]

    def page(**params: Any) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{pictrs.url}/internal/hashes", params=params, headers=TOKEN
        ).json()
        page_body: dict[str, Any] = body["page"]
        return page_body

    first = page(limit=2)
    assert [h["hex"] for h in first["hashes"]] == newest_first[:2] and "prev" not in first
    second = page(limit=2, slug=first["next"])
    assert [h["hex"] for h in second["hashes"]] == newest_first[2:4]
    assert second["current"] == first["next"] and second["prev"] == first["current"]
    last = page(limit=2, slug=second["next"])
    assert [h["hex"] for h in last["hashes"]] == newest_first[4:] and "next" not in last
    assert base64.urlsafe_b64decode(last["current"]).hex() == newest_first[4]
    older = page(limit=10, timestamp="2023-11-14T22:13:22Z")  # 1_700_000_002
    assert [h["hex"] for h in older["hashes"]] == newest_first[3:]


def test_pictrs_prune_missing_drops_records_whose_file_is_gone(pictrs: FakePictrs) -> None:
    kept, lost = pictrs.seed(image_bytes(20)), pictrs.seed(image_bytes(21))
    pictrs.store.remove(lost.identifier)  # deleted behind pict-rs's back
    assert httpx.get(f"{pictrs.url}/image/original/{lost.alias}").status_code == 500
    first = httpx.post(f"{pictrs.url}/internal/prune_missing", headers=TOKEN).json()
    assert first == {"complete": False, "progress": 0, "total": 2}
    second = httpx.post(f"{pictrs.url}/internal/prune_missing", headers=TOKEN).json()
    assert second == {"complete": True, "progress": 1, "total": 1}
    assert pictrs.aliases() == [kept.alias]


def test_pictrs_backgrounded_upload_reports_rejection_on_claim(tmp_path: Path) -> None:
    with (
        RecordingEndpoint(406) as validator,
        FakePictrs(FilesystemStore(tmp_path), external_validation=validator.url) as pictrs,
    ):
        response = upload(pictrs, image_bytes(22), path="/image/backgrounded")
        assert response.status_code == 202
        (entry,) = response.json()["uploads"]
        claim = httpx.get(f"{pictrs.url}/image/backgrounded/claim", params=entry, timeout=30)
        assert claim.status_code == 422 and claim.json()["code"] == "failed-external-validation"
        assert pictrs.stored_identifiers() == set()


# --- Lemmy ------------------------------------------------------------------------------------


@pytest.fixture
def lemmy_pictrs(tmp_path: Path) -> Iterator[tuple[FakeLemmy, FakePictrs]]:
    with (
        FakePictrs(FilesystemStore(tmp_path / "pictrs"), api_key=KEY) as pictrs,
        FakeLemmy(pictrs_url=pictrs.url, pictrs_api_key=KEY) as lemmy,
    ):
        yield lemmy, pictrs


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api(
    lemmy: FakeLemmy, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    return httpx.request(
        method, f"{lemmy.url}/api/v3{path}", headers=bearer(token) if token else {}, **kw
    )


def test_lemmy_login_and_admin_only_media_listing(
    lemmy_pictrs: tuple[FakeLemmy, FakePictrs],
) -> None:
    lemmy, pictrs = lemmy_pictrs
    lemmy.add_person("admin", admin=True)
    bob = lemmy.add_person("bob")
    login = api(
        lemmy, "POST", "/user/login", json={"username_or_email": "admin", "password": "password"}
    )
    jwt = login.json()["jwt"]
    bad = api(lemmy, "POST", "/user/login", json={"username_or_email": "admin", "password": "x"})
    assert (bad.status_code, bad.json()) == (401, {"error": "incorrect_login"})
    uploaded = httpx.post(
        f"{lemmy.url}/pictrs/image",
        headers=bearer(lemmy.token_for(bob)),
        files=[("images[]", ("a.png", image_bytes(30), "image/png"))],
    )
    alias = uploaded.json()["files"][0]["file"]
    media = api(lemmy, "GET", "/admin/list_all_media", jwt).json()["images"]
    assert [(m["local_image"]["pictrs_alias"], m["person"]["name"]) for m in media] == [
        (alias, "bob")
    ]
    assert api(lemmy, "GET", "/admin/list_all_media").json() == {"error": "incorrect_login"}
    assert api(lemmy, "GET", "/admin/list_all_media", lemmy.token_for(bob)).json() == {
        "error": "not_an_admin"
    }
    too_many = api(lemmy, "GET", "/admin/list_all_media", jwt, params={"limit": 51})
    assert too_many.json() == {"error": "unknown", "message": "Fetch limit is > 50"}
    assert pictrs.aliases() == [alias]


def test_lemmy_search_finds_posts_and_comments_using_an_image(
    lemmy_pictrs: tuple[FakeLemmy, FakePictrs],
) -> None:
    lemmy, _ = lemmy_pictrs
    admin = lemmy.token_for(lemmy.add_person("admin", admin=True))
    bob = lemmy.add_person("bob")
    url = lemmy.image_url("abc.png")
    bob_token = lemmy.token_for(bob)
    community = api(lemmy, "POST", "/community", bob_token, json={"name": "pics", "title": "Pics"})
    community_id = community.json()["community_view"]["community"]["id"]
    created = api(
        lemmy,
        "POST",
        "/post",
        bob_token,
        json={"name": "p", "community_id": community_id, "url": url},
    )
    by_url = created.json()["post_view"]["post"]["id"]
    in_body = lemmy.add_post(bob, body=f"see ![x]({url})")
    nsfw = lemmy.add_post(bob, body=f"![x]({url})", nsfw=True)
    comment = lemmy.add_comment(bob, by_url, f"also ![y]({url})")

    def ids(params: dict[str, Any], key: str, token: str | None = admin) -> set[int]:
        found = api(lemmy, "GET", "/search", token, params=params).json()[key]
        return {v["comment" if key == "comments" else "post"]["id"] for v in found}

    assert ids({"q": url, "type_": "Url"}, "posts") == {by_url}
    assert ids({"q": "abc.png", "type_": "Posts"}, "posts") == {in_body}
    assert ids({"q": "abc.png", "type_": "Comments"}, "comments") == {comment}
    lemmy.persons[1].show_nsfw = True
    assert ids({"q": "abc.png", "type_": "Posts"}, "posts") == {in_body, nsfw}


def test_lemmy_report_then_remove_resolves_the_report(
    lemmy_pictrs: tuple[FakeLemmy, FakePictrs],
) -> None:
    lemmy, _ = lemmy_pictrs
    admin = lemmy.token_for(lemmy.add_person("admin", admin=True, email="admin@example.invalid"))
    bob = lemmy.add_person("bob")
    post = lemmy.add_post(bob, url="https://x.example/a.png")
    reporter = lemmy.token_for(lemmy.add_person("carol"))
    assert api(
        lemmy, "POST", "/post/report", reporter, json={"post_id": post, "reason": ""}
    ).json() == {"error": "report_reason_required"}
    report = api(
        lemmy, "POST", "/post/report", reporter, json={"post_id": post, "reason": "csam"}
    ).json()
    assert (
        report["post_report_view"]["post_report"]["original_post_url"] == "https://x.example/a.png"
    )
    assert lemmy.admin_emails == [
        {"to": "admin@example.invalid", "reporter": "carol", "reported": "bob"}
    ]
    denied = api(lemmy, "POST", "/post/remove", reporter, json={"post_id": post, "removed": True})
    assert denied.json() == {"error": "not_a_moderator"}
    removed = api(
        lemmy, "POST", "/post/remove", admin, json={"post_id": post, "removed": True, "reason": "r"}
    )
    assert removed.json()["post_view"]["post"]["removed"] is True
    reports = api(
        lemmy, "GET", "/post/report/list", admin, params={"unresolved_only": "true"}
    ).json()
    assert reports == {"post_reports": []}


def test_lemmy_ban_with_remove_data_removes_content_and_deletes_uploads(
    lemmy_pictrs: tuple[FakeLemmy, FakePictrs],
) -> None:
    lemmy, pictrs = lemmy_pictrs
    admin = lemmy.token_for(lemmy.add_person("admin", admin=True))
    bob = lemmy.add_person("bob")
    bob_token = lemmy.token_for(bob)
    uploaded = pictrs.seed(image_bytes(31))
    lemmy.add_local_image(bob, uploaded.alias, uploaded.delete_token)
    post = lemmy.add_post(bob, url=lemmy.image_url(uploaded.alias))
    comment = lemmy.add_comment(bob, post, "hi")
    body = {"person_id": bob, "ban": True, "remove_data": True, "reason": "csam", "expires": None}
    response = api(lemmy, "POST", "/user/ban", admin, json=body).json()
    assert response["banned"] is True and response["person_view"]["person"]["banned"] is True
    assert lemmy.posts[post].removed and lemmy.comments[comment].removed
    assert pictrs.aliases() == []  # deleted through its delete token
    assert api(lemmy, "GET", "/account/list_media", bob_token).json() == {
        "error": "incorrect_login"
    }
    past = api(
        lemmy, "POST", "/user/ban", admin, json={"person_id": bob, "ban": True, "expires": 1}
    )
    assert past.json() == {"error": "ban_expiration_in_past"}


def test_lemmy_purge_post_purges_url_and_thumbnail_in_pictrs(
    lemmy_pictrs: tuple[FakeLemmy, FakePictrs],
) -> None:
    lemmy, pictrs = lemmy_pictrs
    admin = lemmy.token_for(lemmy.add_person("admin", admin=True))
    bob = lemmy.add_person("bob")
    image, thumb = pictrs.seed(image_bytes(32)), pictrs.seed(image_bytes(33))
    post = lemmy.add_post(
        bob, url=lemmy.image_url(image.alias), thumbnail_url=lemmy.image_url(thumb.alias)
    )
    lemmy.add_comment(bob, post, "x")
    assert api(
        lemmy, "POST", "/admin/purge/post", admin, json={"post_id": post, "reason": "r"}
    ).json() == {"success": True}
    assert pictrs.aliases() == [] and pictrs.stored_identifiers() == set()
    assert post not in lemmy.posts and lemmy.comments == {}
    assert api(lemmy, "GET", "/post", admin, params={"id": post}).json() == {
        "error": "couldnt_find_post"
    }
    purges = [c for c in lemmy.pictrs_calls if "/internal/purge" in c.url]
    assert len(purges) == 2 and all(c.status == 200 for c in purges)


def test_lemmy_purge_person_and_message_admins(lemmy_pictrs: tuple[FakeLemmy, FakePictrs]) -> None:
    lemmy, _ = lemmy_pictrs
    first_admin = lemmy.add_person("admin", admin=True)
    admin = lemmy.token_for(first_admin)
    later_admin = lemmy.token_for(lemmy.add_person("admin2", admin=True))
    bob = lemmy.add_person("bob")
    post = lemmy.add_post(bob, url="https://x.example/a.png")
    assert api(
        lemmy, "POST", "/admin/purge/person", later_admin, json={"person_id": first_admin}
    ).json() == {"error": "not_higher_admin"}
    assert api(lemmy, "POST", "/admin/purge/person", admin, json={"person_id": bob}).json() == {
        "success": True
    }
    assert lemmy.posts[post].url is None and lemmy.posts[post].deleted
    assert lemmy.persons[bob].banned and lemmy.persons[bob].deleted
    site = api(lemmy, "GET", "/site").json()
    assert [a["person"]["name"] for a in site["admins"]] == ["admin", "admin2"]
    sent = api(
        lemmy,
        "POST",
        "/private_message",
        later_admin,
        json={"content": "flagged", "recipient_id": first_admin},
    )
    assert sent.json()["private_message_view"]["recipient"]["name"] == "admin"
    inbox = api(lemmy, "GET", "/private_message/list", admin).json()["private_messages"]
    assert [m["private_message"]["content"] for m in inbox] == ["flagged"]


def test_lemmy_upload_proxy_drops_pictrs_error_code(tmp_path: Path) -> None:
    with (
        RecordingEndpoint(406) as validator,
        FakePictrs(FilesystemStore(tmp_path), external_validation=validator.url) as pictrs,
        FakeLemmy(pictrs_url=pictrs.url) as lemmy,
    ):
        bob = lemmy.token_for(lemmy.add_person("bob"))
        response = httpx.post(
            f"{lemmy.url}/pictrs/image",
            headers=bearer(bob),
            files=[("images[]", ("a.png", image_bytes(34), "image/png"))],
        )
        assert (response.status_code, response.json()) == (
            400,
            {"files": None, "msg": "Failed external validation"},
        )
        assert lemmy.local_images == []


# --- Mastodon ---------------------------------------------------------------------------------


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon() as fake:
        yield fake


def masto(
    fake: FakeMastodon, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    return httpx.request(method, f"{fake.url}{path}", headers=bearer(token) if token else {}, **kw)


def test_mastodon_admin_api_checks_token_scope_and_role(mastodon: FakeMastodon) -> None:
    admin = mastodon.add_account("admin", role="Admin")
    user = mastodon.add_account("user")
    path = f"/api/v1/admin/accounts/{user}"
    not_allowed = {"error": "This action is not allowed"}
    assert (masto(mastodon, "GET", path).status_code, masto(mastodon, "GET", path).json()) == (
        403,
        not_allowed,
    )
    read_only = mastodon.add_token(admin, "read write")
    out_of_scope = masto(mastodon, "GET", path, read_only)
    assert (out_of_scope.status_code, out_of_scope.json()) == (
        403,
        {"error": "This action is outside the authorized scopes"},
    )
    assert (
        masto(mastodon, "GET", path, mastodon.add_token(user, "admin:read")).json() == not_allowed
    )
    good = mastodon.add_token(admin, "admin:read:accounts")
    assert masto(mastodon, "GET", path, good).json()["username"] == "user"
    assert masto(mastodon, "GET", "/api/v1/admin/accounts/1", good).json() == {
        "error": "Record not found"
    }
    mastodon.revoke_token(good)
    revoked = masto(mastodon, "GET", path, good)
    assert (revoked.status_code, revoked.json()) == (401, {"error": "The access token was revoked"})


def test_mastodon_report_then_suspend_resolves_reports_and_hides_statuses(
    mastodon: FakeMastodon,
) -> None:
    admin = mastodon.add_account("admin", role="Admin")
    reporter = mastodon.add_account("reporter")
    target = mastodon.add_account("spammer", domain="remote.example")
    status = mastodon.add_status(target, media=["0123456789abcdef.png"])
    write = mastodon.add_token(reporter, "write:reports")
    assert (
        masto(mastodon, "POST", "/api/v1/reports", json={"account_id": target}).status_code == 401
    )
    body = {"account_id": target, "status_ids": [status], "comment": "csam", "category": "legal"}
    report = masto(
        mastodon, "POST", "/api/v1/reports", write, json={**body, "forward": True}
    ).json()
    assert (
        report["status_ids"] == [status]
        and report["forwarded"] is True
        and report["category"] == "legal"
    )
    assert mastodon.staff_notifications == [{"account_id": admin, "report_id": report["id"]}]
    staff = mastodon.add_token(admin, "admin:read admin:write")
    listed = masto(mastodon, "GET", "/api/v1/admin/reports", staff).json()
    assert [(r["id"], r["statuses"][0]["id"]) for r in listed] == [(report["id"], status)]
    bad = masto(
        mastodon, "POST", f"/api/v1/admin/accounts/{target}/action", staff, json={"type": "ban"}
    )
    assert (bad.status_code, bad.json()) == (
        422,
        {"error": "Validation failed: Type is not included in the list"},
    )
    action = {
        "type": "suspend",
        "report_id": report["id"],
        "text": "bye",
        "send_email_notification": True,
    }
    done = masto(mastodon, "POST", f"/api/v1/admin/accounts/{target}/action", staff, json=action)
    assert (done.status_code, done.json()) == (200, {})
    account = masto(mastodon, "GET", f"/api/v1/admin/accounts/{target}", staff).json()
    assert account["suspended"] is True and account["account"]["suspended"] is True
    assert masto(mastodon, "GET", "/api/v1/admin/reports", staff).json() == []
    resolved = masto(
        mastodon, "GET", "/api/v1/admin/reports", staff, params={"resolved": "true"}
    ).json()
    assert (
        resolved[0]["action_taken"] is True
        and resolved[0]["action_taken_by_account"]["id"] == admin
    )
    assert masto(mastodon, "GET", f"/api/v1/statuses/{status}").status_code == 404
    assert mastodon.strikes[-1].emailed is False  # remote accounts get no email


def test_mastodon_action_none_resolves_only_its_report(mastodon: FakeMastodon) -> None:
    admin = mastodon.add_account("admin", role="Moderator")
    reporter = mastodon.add_token(mastodon.add_account("reporter"), "write")
    target = mastodon.add_account("target")
    ids = [
        masto(
            mastodon,
            "POST",
            "/api/v1/reports",
            reporter,
            data={"account_id": target, "comment": str(i)},
        ).json()["id"]
        for i in range(2)
    ]
    staff = mastodon.add_token(admin, "admin:write:accounts admin:read:reports")
    masto(
        mastodon,
        "POST",
        f"/api/v1/admin/accounts/{target}/action",
        staff,
        data={"type": "none", "report_id": ids[0]},
    )
    open_reports = masto(mastodon, "GET", "/api/v1/admin/reports", staff).json()
    assert [r["id"] for r in open_reports] == [ids[1]]
    assert mastodon.strikes[-1].emailed is True and mastodon.strikes[-1].report_id == int(ids[0])


def test_mastodon_media_path_leads_to_its_status_through_tootctl_lookup(
    mastodon: FakeMastodon,
) -> None:
    user = mastodon.add_account("alice")
    status = mastodon.add_status(user, media=["feedfacecafebeef.jpg"])
    (media,) = [m for m in mastodon.media.values() if m.status_id == int(status)]
    key = mastodon.media_storage_key(media.id)
    digits = f"{media.id:09d}"
    partition = "/".join(re.findall("...", digits))
    assert key == f"media_attachments/files/{partition}/original/feedfacecafebeef.jpg"
    assert mastodon.tootctl_media_lookup(mastodon.media_url(media.id)) == (
        0,
        f"{mastodon.url}/@alice/{status}",
    )
    assert mastodon.tootctl_media_lookup(f"{mastodon.url}/system/nothing.png") == (
        1,
        "Not a media URL",
    )
    shown = masto(mastodon, "GET", f"/api/v1/statuses/{status}").json()
    assert shown["account"]["id"] == user and shown["media_attachments"][0][
        "url"
    ] == mastodon.media_url(media.id)


def test_mastodon_admin_lists_paginate_with_link_headers(mastodon: FakeMastodon) -> None:
    staff = mastodon.add_token(mastodon.add_account("admin", role="Admin"), "admin:read")
    for i in range(3):
        mastodon.add_account(f"user{i}")
    first = masto(mastodon, "GET", "/api/v1/admin/accounts", staff, params={"limit": 2})
    assert len(first.json()) == 2 and 'rel="next"' in first.headers["link"]
    next_url = re.search(r"<([^>]+)>; rel=\"next\"", first.headers["link"])
    assert next_url is not None
    rest = httpx.get(next_url.group(1), headers=bearer(staff)).json()
    assert len(rest) == 2 and {a["id"] for a in rest}.isdisjoint({a["id"] for a in first.json()})


# --- HMA --------------------------------------------------------------------------------------


def flip(pdq: str, bits: int) -> str:
    return f"{int(pdq, 16) ^ ((1 << bits) - 1):064x}"


@pytest.fixture
def hma() -> Iterator[FakeHMA]:
    with FakeHMA() as fake:
        fake.add_bank("CSAM_BANK")
        yield fake


def test_hma_pdq_matches_at_distance_31_and_misses_at_32(hma: FakeHMA) -> None:
    banked = "f" * 16 + "0" * 48
    cid = hma.add_signal("CSAM_BANK", "pdq", banked)

    def lookup(signal: str) -> dict[str, Any]:
        response = httpx.get(f"{hma.url}/m/lookup", params={"signal": signal, "signal_type": "pdq"})
        body: dict[str, Any] = response.json()
        return body

    assert lookup(flip(banked, 31)) == {"CSAM_BANK": [{"bank_content_id": cid, "distance": "31"}]}
    assert lookup(flip(banked, 32)) == {}
    raw = httpx.get(
        f"{hma.url}/m/raw_lookup",
        params={"signal": flip(banked, 3), "signal_type": "pdq", "include_distance": "true"},
    )
    assert raw.json() == {"matches": [{"bank_content_id": cid, "distance": "3"}]}
    bad = httpx.get(f"{hma.url}/m/lookup", params={"signal": "xyz", "signal_type": "pdq"})
    assert (bad.status_code, bad.json()) == (400, {"message": "invalid signal: invalid PDQ hash"})


def test_hma_video_md5_is_exact_and_disabled_content_does_not_match(hma: FakeHMA) -> None:
    video = hashlib.md5(b"video bytes").hexdigest()
    cid = hma.add_signal("CSAM_BANK", "video_md5", video)
    params = {"signal": video, "signal_type": "video_md5"}
    assert httpx.get(f"{hma.url}/m/lookup", params=params).json() == {
        "CSAM_BANK": [{"bank_content_id": cid, "distance": "-"}]
    }
    other = {"signal": hashlib.md5(b"other").hexdigest(), "signal_type": "video_md5"}
    assert httpx.get(f"{hma.url}/m/lookup", params=other).json() == {}
    httpx.put(f"{hma.url}/c/bank/CSAM_BANK/content/{cid}", json={"disable_until_ts": 0})
    assert httpx.get(f"{hma.url}/m/lookup", params=params).json() == {}
    assert httpx.get(f"{hma.url}/m/raw_lookup", params=params).json() == {"matches": [cid]}


def test_hma_file_lookup_hashes_the_upload_and_finds_the_banked_image(hma: FakeHMA) -> None:
    data = image_bytes(40, "PNG", 256)
    added = httpx.post(
        f"{hma.url}/c/bank/CSAM_BANK/content", files={"photo": ("a.png", data, "image/png")}
    ).json()
    assert added["signals"] == {"pdq": pdq_signal(data)}
    found = httpx.post(f"{hma.url}/m/lookup", files={"photo": ("b.png", data, "image/png")}).json()
    assert found == {"pdq": {"CSAM_BANK": [{"bank_content_id": added["id"], "distance": "0"}]}}
    assert httpx.get(f"{hma.url}/m/index/status").json()["pdq"]["size"] == 1
    assert httpx.post(f"{hma.url}/c/banks", json={"name": "lower"}).json() == {
        "message": "Bank names must be UPPER_WITH_UNDERSCORE"
    }


def test_hma_waits_for_its_index_when_auto_index_is_off() -> None:
    with FakeHMA(auto_index=False) as hma:
        assert httpx.get(f"{hma.url}/status").status_code == 503
        hma.add_bank("BANK")
        md5 = hashlib.md5(b"x").hexdigest()
        hma.add_signal("BANK", "video_md5", md5)
        params = {"signal": md5, "signal_type": "video_md5"}
        assert httpx.get(f"{hma.url}/m/lookup", params=params).status_code == 503
        hma.build_index()
        assert httpx.get(f"{hma.url}/status").text == "I-AM-ALIVE"
        assert "BANK" in httpx.get(f"{hma.url}/m/lookup", params=params).json()
