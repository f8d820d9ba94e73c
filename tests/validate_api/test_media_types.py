"""Uploads are judged by their bytes: video is scanned, lying headers change nothing, and
what cannot be scanned follows ``api.on_error`` and reaches the admins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from classify.engine import ClassifyEngine
from classify.fastpath import FastPath
from classify.hashing import sha256_hex
from classify.hashlists import HashLists
from classify.settings import ClassifySettings
from pipeline.bus.memory import MemoryBus
from pipeline.state.shared import SharedTables
from pipeline.state.sqlite import SqliteState
from tests import media
from tests.enforce.receivers import HttpReceiver
from tests.servers import free_port, wait_until
from tests.validate_api.helpers import CLIENT, Stack, base_config, start, wait_ready
from validate_api.replies import ReplyRouter
from validate_api.service import Validator
from validate_api.settings import ApiSettings

MISLABELLED = {item.name: item for item in media.mislabelled(21)}
HOSTILE = {item.name: item for item in media.hostile_videos()}


def upload(url: str, data: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/scan/{CLIENT}",
        content=data,
        headers={"Content-Type": content_type},
        timeout=30,
    )


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`pictguard serve` with ``api.on_error: reject``: unscannable uploads are refused."""
    tmp = tmp_path_factory.mktemp("strict")
    port = free_port()
    config = base_config(tmp, port=port, on_error="reject")
    stack = Stack([f"http://127.0.0.1:{port}"], config, enforce_config=config)
    start(stack, ["serve"], config, tmp, "serve")
    wait_ready(stack)
    yield stack
    stack.stop()


def test_video_is_scanned_by_default(single: Stack) -> None:
    data = media.video(22, 320, 240, seconds=2.0, fps=8, container="webm")
    answer = upload(single.url, data, "video/webm")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["path"] == "model" and body["decision"] == "allow"
    assert body["media"]["type"] == "video/webm" and body["media"]["frames"] == 16
    assert len(body["media"]["sampled"]) == 16


def test_a_png_sent_as_video_is_scanned_as_a_png(single: Stack) -> None:
    item = MISLABELLED["clip.mp4"]
    answer = upload(single.url, item.data, item.content_type)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["path"] == "model" and body["decision"] == "allow"
    assert "unverified" not in body
    assert body["detail"] == "declared video/mp4, content is image/png"


def test_a_video_sent_as_jpeg_is_scanned_as_a_video(single: Stack) -> None:
    item = MISLABELLED["photo.jpg"]
    body = upload(single.url, item.data, item.content_type).json()
    assert body["path"] == "model" and body["media"]["type"] == "video/mp4"
    assert body["detail"] == "declared image/jpeg, content is video/mp4"


@pytest.mark.parametrize(
    "make", [media.jxl_image, media.avif_image, media.heic_image], ids=["jxl", "avif", "heic"]
)
def test_still_formats_pict_rs_keeps_are_scanned(single: Stack, make: object) -> None:
    data = make(23, 480, 360)  # type: ignore[operator]
    body = upload(single.url, data, "image/jpeg").json()
    assert (body["path"], body["decision"]) == ("model", "allow"), body
    assert "unverified" not in body


def test_unscannable_uploads_are_accepted_by_default_and_admins_hear_of_them(
    single: Stack, notifications: HttpReceiver
) -> None:
    answer = upload(single.url, HOSTILE["huge-frame.webm"].data, "video/webm")
    assert answer.status_code == 200
    body = answer.json()
    assert body["decision"] == "error" and body["reason"] == "too_large"
    assert body["unverified"] == "could not classify: too_large"

    def notice() -> dict[str, object] | None:
        for request in list(notifications.requests):
            payload = request.json()
            if payload.get("verdict_id") == body["verdict_id"]:
                return payload  # type: ignore[no-any-return]
        return None

    wait_until(notice, 60, "the notification of the unscannable upload")
    payload = notice()
    assert payload is not None
    assert (payload["severity"], payload["reason"]) == ("warning", "too_large")


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        pytest.param(HOSTILE["huge-frame.webm"].data, "video/webm", "too_large", id="huge-video"),
        pytest.param(HOSTILE["truncated.mp4"].data, "video/mp4", "undecodable", id="cut-video"),
        pytest.param(media.non_image("pdf"), "image/jpeg", "unsupported_type", id="pdf"),
    ],
)
def test_on_error_reject_refuses_what_cannot_be_scanned(
    strict: Stack, data: bytes, content_type: str, reason: str
) -> None:
    answer = upload(strict.url, data, content_type)
    assert answer.status_code == 422, answer.text
    assert answer.json()["reason"] == reason


def test_on_error_reject_still_takes_video_it_can_scan(strict: Stack) -> None:
    data = media.video(24, 320, 240, seconds=1.0, fps=8, container="mov")
    answer = upload(strict.url, data, "video/quicktime")
    assert answer.status_code == 200, answer.text
    assert answer.json()["media"]["type"] == "video/quicktime"


async def test_api_video_reject_and_accept_go_by_the_bytes(tmp_path: Path) -> None:
    """``api.video: reject`` refuses an MP4 whatever its header says, and lets a PNG sent
    as video/mp4 through to be scanned (here: answered from the blocklist)."""
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.start()
    tables = SharedTables(state.table("hashlists"), state.table("verdict-cache"))
    await tables.start()
    png = MISLABELLED["clip.mp4"]
    await HashLists(tables.hashlists).add(sha256=sha256_hex(png.data), list="block")
    engine = ClassifyEngine(ClassifySettings(classifiers=["hashlist"]), tables)
    await engine.start()
    bus = MemoryBus()
    try:
        for policy, accepted in (("reject", False), ("accept", True)):
            validator = Validator(
                ApiSettings(video=policy, deadline_s=1),  # type: ignore[arg-type]
                bus,
                "t.scan-requests.sync",
                ReplyRouter(bus, "t.replies.x", "api-x"),
                FastPath(engine),
            )
            video = MISLABELLED["photo.jpg"]
            outcome = await validator.validate(video.data, video.content_type)
            assert (outcome.path, outcome.accepted) == ("video", accepted)
            assert outcome.unverified == f"video/mp4 is not scanned (api.video={policy})"
            outcome = await validator.validate(png.data, png.content_type)
            assert (outcome.path, outcome.decision) == ("fast", "flag_csam")
    finally:
        await engine.stop()
        await tables.stop()
        await state.stop()
