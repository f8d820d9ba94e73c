"""pictguard as a drop-in for pictrs-safety: what pict-rs is told to refuse, what it keeps,
and what happens to what it keeps.

Real `pictguard serve` processes (with the deterministic colour model: red washes are
``flag_nsfw``, magenta ``flag_csam``), the pict-rs fake storing uploads in a folder pictguard
watches, and a pict-rs-style client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.classify.remote.media import MAGENTA, RED, clean, washed
from tests.enforce.receivers import HttpReceiver, http_receiver
from tests.fakes import FakePictrs, FilesystemStore
from tests.servers import free_port, wait_until
from tests.validate_api.dropin import (
    action_notices,
    launch,
    metric,
    pictrs_validate,
    webhook,
)
from tests.validate_api.helpers import CLIENT, Stack, wait_ready


def serve_config(tmp: Path, port: int, notify: str, **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "storage": {"state_dir": str(tmp / "state")},
        "classify": {"classifiers": ["hashlist", "colour"]},
        "enforce": {"notify": {"channels": [webhook(notify)]}},
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "deadline_s": 5,
            "clients": [{"id": CLIENT, "cidrs": ["127.0.0.0/8", "::1/128"]}],
        },
        "log": {"level": "INFO"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def pictrs_box(
    tmp_path_factory: pytest.TempPathFactory, receiver: HttpReceiver
) -> Iterator[tuple[Stack, Path, Path]]:
    """`pictguard serve` beside pict-rs's files folder: the folder watcher rescans what
    pict-rs keeps, nudity is reported at upload (api.reject: [flag_csam]) and quarantined
    from storage by enforce's policy."""
    tmp = tmp_path_factory.mktemp("box")
    files, quarantine = tmp / "pictrs-files", tmp / "quarantine"
    files.mkdir()
    port = free_port()
    config = serve_config(
        tmp,
        port,
        receiver.url,
        api={"reject": ["flag_csam"]},
        enforce={"on_flag_nsfw": "quarantine", "quarantine": str(quarantine)},
        ingest={"watch": {"enabled": True, "roots": [str(files)], "settle_s": 0.3}},
    )
    stack = Stack([f"http://127.0.0.1:{port}"], config, enforce_config=config)
    launch(stack, ["serve"], config, tmp, "serve")
    try:
        wait_ready(stack)
        yield stack, files, quarantine
    finally:
        stack.stop()


def _upload(pictrs: FakePictrs, data: bytes) -> httpx.Response:
    """An upload to pict-rs as Lemmy sends it (multipart ``images[]``)."""
    return httpx.post(
        f"{pictrs.url}/image", files=[("images[]", ("photo.jpg", data, "image/jpeg"))], timeout=60
    )


async def test_a_flagged_upload_outside_api_reject_is_kept_reported_and_enforced_from_storage(
    pictrs_box: tuple[Stack, Path, Path], receiver: HttpReceiver
) -> None:
    stack, files, quarantine = pictrs_box
    validation = f"{stack.url}/api/v1/scan/{CLIENT}"
    nudity, csam = washed(7101, RED), washed(7102, MAGENTA)

    # What pict-rs reads: nudity is accepted with its decision, CSAM refused.
    kept = await pictrs_validate(validation, nudity, "image/jpeg")
    assert kept.status_code == 200, kept.text
    assert (kept.json()["accepted"], kept.json()["decision"]) == (True, "flag_nsfw")
    assert "sha256" not in kept.json()  # a flagged answer keeps the hashes inside
    refused = await pictrs_validate(validation, csam, "image/jpeg")
    assert refused.status_code == 406
    assert refused.json()["decision"] == "flag_csam"

    # Through pict-rs: it stores first, asks pictguard, and keeps only what got a 2xx.
    with FakePictrs(FilesystemStore(files), external_validation=validation) as pictrs:
        uploaded = await asyncio.to_thread(_upload, pictrs, nudity)
        assert uploaded.status_code == 201, uploaded.text
        alias = uploaded.json()["files"][0]["file"]
        identifier = pictrs.identifier_of(alias)
        assert identifier is not None
        turned_away = await asyncio.to_thread(_upload, pictrs, washed(7103, MAGENTA))
        assert turned_away.status_code == 400
        assert turned_away.json()["code"] == "failed-external-validation"
        assert [c.status for c in pictrs.validation_calls] == [200, 406]

    # The kept upload is found in storage and enforced there per enforce.on_flag_nsfw.
    stored = f"file://{files}/{identifier}"
    await asyncio.to_thread(
        wait_until,
        lambda: any(
            n.get("object") == stored and n.get("action") == "quarantine"
            for n in action_notices(receiver)
        ),
        90,
        "the quarantine of the stored upload",
    )
    [notice] = [n for n in action_notices(receiver) if n.get("object") == stored]
    assert (notice["decision"], notice["outcome"]) == ("flag_nsfw", "done")
    assert not (files / identifier).exists()
    assert any(p.is_file() for p in quarantine.rglob("*"))
    # And the upload's own decision was reported when it was answered (nothing stored yet).
    assert any(
        n.get("verdict_id") == kept.json()["verdict_id"] and n["action"] == "report"
        for n in action_notices(receiver)
    )


async def test_a_clean_upload_is_kept_and_left_alone(
    pictrs_box: tuple[Stack, Path, Path], receiver: HttpReceiver
) -> None:
    stack, _, _ = pictrs_box
    photo = clean(7201)
    answer = await pictrs_validate(f"{stack.url}/api/v1/scan/{CLIENT}", photo, "image/jpeg")
    assert answer.status_code == 200 and answer.json()["decision"] == "allow"
    assert "unverified" not in answer.json()
    assert metric(stack.url, "pictguard_api_classifier_down") == 0
    assert httpx.get(f"{stack.url}/readyz", timeout=10).json() == {"status": "ready"}


def test_serve_with_a_rescan_source_does_not_warn(pictrs_box: tuple[Stack, Path, Path]) -> None:
    stack, _, _ = pictrs_box
    log = stack.logs[0].read_text()
    assert "nothing rescans stored objects" not in log
    assert "uploads are refused (406) for flag_csam;" in log


# -- migrating from pictrs-safety ------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory, receiver: HttpReceiver) -> Iterator[Stack]:
    """pictguard set up from a pictrs-safety .env, as the README's migration table says:
    KNOWN_PICTRS_IDS='["__WELCOME_IN__"]' and KNOWN_PICTRS_IPS='["127.0.0.1"]' become two
    api.clients, and every other setting keeps its default (api.reject unset)."""
    tmp = tmp_path_factory.mktemp("migrated")
    port = free_port()
    config = serve_config(tmp, port, receiver.url)
    config["api"]["clients"] = [
        {"id": "__WELCOME_IN__", "cidrs": ["127.0.0.0/8"]},
        {"id": "IPADDR", "cidrs": ["127.0.0.1/32"]},
    ]
    stack = Stack([f"http://127.0.0.1:{port}"], config, enforce_config=config)
    # The port from the environment, as a compose file or Helm values would set it.
    del config["api"]["port"]
    launch(stack, ["serve"], config, tmp, "serve", PICTGUARD_API__PORT=str(port))
    try:
        wait_ready(stack)
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize("client_id", ["__WELCOME_IN__", "IPADDR"])
async def test_the_pictrs_client_gets_pictrs_safety_answers_on_both_url_shapes(
    migrated: Stack, client_id: str
) -> None:
    url = f"{migrated.url}/api/v1/scan/{client_id}"
    photo = clean(7300 + len(client_id))
    ok = await pictrs_validate(url, photo, "image/jpeg")
    assert ok.status_code == 200 and ok.json()["decision"] == "allow"
    # pictrs-safety refuses only CSAM; so does pictguard's default with enforce's default
    # policy for nudity (report), which still reports it.
    nudity = await pictrs_validate(url, washed(7310 + len(client_id), RED), "image/jpeg")
    assert nudity.status_code == 200 and nudity.json()["decision"] == "flag_nsfw"
    csam = await pictrs_validate(url, washed(7320 + len(client_id), MAGENTA), "image/jpeg")
    assert csam.status_code == 406
    assert csam.json()["message"] == "rejected by pictguard: flag_csam"
    unknown = await pictrs_validate(
        f"{migrated.url}/api/v1/scan/not-{client_id}", photo, "image/jpeg"
    )
    assert unknown.status_code == 401


async def test_nudity_accepted_at_upload_still_reaches_the_admins(
    migrated: Stack, receiver: HttpReceiver
) -> None:
    answer = await pictrs_validate(
        f"{migrated.url}/api/v1/scan/IPADDR", washed(7400, RED), "image/jpeg"
    )
    assert answer.status_code == 200
    verdict_id = answer.json()["verdict_id"]
    await asyncio.to_thread(
        wait_until,
        lambda: any(n["verdict_id"] == verdict_id for n in action_notices(receiver)),
        60,
        "the report of the accepted nudity",
    )
    [notice] = [n for n in action_notices(receiver) if n["verdict_id"] == verdict_id]
    assert (notice["decision"], notice["action"], notice["severity"]) == (
        "flag_nsfw",
        "report",
        "warning",
    )


def test_serve_without_a_rescan_source_says_so_at_start(migrated: Stack) -> None:
    log = migrated.logs[0].read_text()
    [line] = [x for x in log.splitlines() if "nothing rescans stored objects" in x]
    assert " WARNING " in line
    # It names what is accepted unscanned and what to set.
    for setting in ("api.on_timeout=accept", "ingest.watch", "ingest.reconcile"):
        assert setting in line
    assert "api.video" not in line  # videos are scanned by default
