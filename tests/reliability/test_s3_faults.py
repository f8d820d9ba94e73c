"""S3 faults between pictguard and the store, injected by a loopback proxy in front of moto.

Every object ends with a verdict: a fault that clears within ``s3.max_attempts`` costs a
retry, one that does not becomes an ``error`` verdict (``fetch_failed``) or a ``failed``
action; nothing crashes and nothing is skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pictguard.scan import run_scan
from pictguard.settings import Settings, load_settings
from pipeline.events import Decision, ErrorReason
from pipeline.samples import image_bytes
from pipeline.storage import StoreUnavailable
from tests.corpus import Corpus
from tests.faultproxy import Fault, FaultProxy
from tests.servers import S3Server
from tests.single_process import block

ATTEMPTS = 3


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def proxied_settings(proxy: FaultProxy, state_dir: Path, **enforce: Any) -> Settings:
    return load_settings(
        s3={
            "endpoint_url": proxy.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            # Short, so the "timeout" fault costs seconds, not minutes; not shorter, or moto
            # itself answering late on a machine whose cores are busy reads as a fault and
            # costs a retry. No fault here is about connecting: a connect timeout short
            # enough to fire on a busy machine would lose attempts before the proxy sees them.
            "read_timeout_s": 5.0,
            "connect_timeout_s": 10.0,
            "max_attempts": ATTEMPTS,
        },
        storage={"state_dir": str(state_dir)},
        classify={"classifiers": ["hashlist"]},
        enforce=enforce,
    )


def gaps(proxy: FaultProxy, method: str, path: str) -> list[float]:
    times = [s.at for s in proxy.seen if s.method == method and path in s.path]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_read_faults_are_retried_then_become_error_verdicts(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    names = ["flaky", "broken", "reset-once", "reset", "hangs", "slow", "cut", "throttled"]
    for i, name in enumerate(names):
        client.put_object(Bucket=bucket, Key=f"m/{name}.png", Body=image_bytes(i, "PNG", 256))
    proxy.add(
        Fault("status", method="GET", path="/m/flaky.png", times=2),
        Fault("status", method="GET", path="/m/broken.png"),
        Fault("reset", method="GET", path="/m/reset-once.png", times=1),
        Fault("reset", method="GET", path="/m/reset.png"),
        Fault("timeout", method="GET", path="/m/hangs.png"),
        Fault("slow", method="GET", path="/m/slow.png", chunk=8192, delay_s=0.02),
        Fault("cut", method="GET", path="/m/cut.png", chunk=1000),
        Fault("status", "GET", "/m/throttled.png", times=1, status=503, code="SlowDown"),
    )

    summary = await run_scan(proxied_settings(proxy, tmp_path), f"s3://{bucket}")

    assert summary.completed and summary.scanned == len(names)  # a verdict for each object
    errors = {v.object.key: v for v, _ in summary.notable if v.object}
    assert set(errors) == {"m/broken.png", "m/reset.png", "m/hangs.png", "m/cut.png"}
    assert {v.reason for v in errors.values()} == {ErrorReason.FETCH_FAILED}
    assert summary.decisions[Decision.ALLOW] == 4  # flaky, reset-once, slow, throttled
    # Retries: a fault that clears costs one attempt more per fault; one that does not
    # costs exactly s3.max_attempts.
    count = {name: proxy.attempts("GET", f"/m/{name}.png") for name in names}
    assert count["flaky"] == 3 and count["throttled"] == 2 and count["slow"] == 1
    assert count["broken"] == ATTEMPTS and count["hangs"] == ATTEMPTS
    assert count["cut"] == ATTEMPTS  # a body broken off mid-way is retried by pictguard
    assert count["reset-once"] >= 2 and count["reset"] >= ATTEMPTS
    # Backoff: pictguard's own body retries wait 0.2 s, then 0.4 s.
    cut = gaps(proxy, "GET", "/m/cut.png")
    assert cut[0] >= 0.2 and cut[1] >= 0.4
    assert "after 3 attempts (s3.max_attempts)" in (errors["m/cut.png"].detail or "")
    assert "Read timeout" in (errors["m/hangs.png"].detail or "")


async def test_failed_deletes_and_copies_leave_the_object_and_are_retried_later(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    corpus = Corpus()
    for seed, name in enumerate(("delete-me", "quarantine-me")):
        corpus.objects[f"{name}.png"] = image_bytes(500 + seed, "PNG", 64)
        corpus.blocked.add(f"{name}.png")
    corpus.upload(client, bucket)
    client.create_bucket(Bucket=f"{bucket}-q")
    settings = proxied_settings(proxy, tmp_path, on_flag_csam="delete", dry_run=False)
    await block(settings, corpus)
    proxy.add(Fault("status", method="DELETE", path=f"/{bucket}/"))

    first = await run_scan(settings, f"s3://{bucket}/delete-me.png")
    assert first.completed and first.actions == {"delete:failed": 1}
    assert "delete-me.png" in {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}

    quarantine = proxied_settings(
        proxy, tmp_path, on_flag_csam="quarantine", quarantine=f"s3://{bucket}-q/"
    )
    proxy.add(Fault("status", method="PUT", path=f"/{bucket}-q/"))  # the copy fails
    second = await run_scan(quarantine, f"s3://{bucket}/quarantine-me.png")
    assert second.completed and second.actions == {"quarantine:failed": 1}
    assert (
        client.get_object(Bucket=bucket, Key="quarantine-me.png")["Body"].read()
        == (corpus.objects["quarantine-me.png"])
    )  # the original stays when the copy fails

    proxy.clear()  # the store recovers: a failed action is not final, the next scan acts
    third = await run_scan(settings, f"s3://{bucket}/delete-me.png", resume=False)
    assert third.actions == {"delete:done": 1}
    fourth = await run_scan(quarantine, f"s3://{bucket}/quarantine-me.png", resume=False)
    assert fourth.actions == {"quarantine:done": 1}
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


async def test_listing_faults_are_retried_and_a_dead_store_is_one_clear_error(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    client.put_object(Bucket=bucket, Key="a.png", Body=image_bytes(1, "PNG", 32))
    proxy.add(Fault("status", method="GET", path=r"list-type=2", times=2))
    summary = await run_scan(proxied_settings(proxy, tmp_path / "a"), f"s3://{bucket}")
    assert summary.completed and summary.scanned == 1

    proxy.add(Fault("status", method="GET", path=r"list-type=2"))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"InternalError.*max retries|PICTGUARD_S3"):
        await run_scan(proxied_settings(proxy, tmp_path / "b"), f"s3://{bucket}")
    assert time.monotonic() - started < 60  # gives up after its budget, does not hang
