"""The admin's undo, end to end: a flagged image is allowed, restored, and copies pass."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from pictguard.scan import run_scan
from pipeline.events import Decision
from pipeline.samples import image_bytes
from tests.corpus import Corpus
from tests.servers import S3Server
from tests.single_process import block, scan_settings


async def test_allow_restores_and_later_copies_skip_the_models(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    client: Any = s3_server.client()
    client.create_bucket(Bucket=f"{bucket}-q")
    image = image_bytes(31337, "PNG", 128)
    corpus = Corpus(objects={"a/x.png": image}, blocked={"a/x.png"})
    corpus.upload(client, bucket)
    settings = scan_settings(s3_server, tmp_path, quarantine=f"s3://{bucket}-q/")
    await block(settings, corpus)
    first = await run_scan(settings, f"s3://{bucket}")
    assert first.decisions[Decision.FLAG_CSAM] == 1
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # quarantined

    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    env.update(
        PICTGUARD_S3__ENDPOINT_URL=s3_server.endpoint,
        PICTGUARD_S3__ACCESS_KEY_ID="testing",
        PICTGUARD_S3__SECRET_ACCESS_KEY="testing",
        PICTGUARD_STORAGE__STATE_DIR=str(tmp_path),
        PICTGUARD_ENFORCE__QUARANTINE=f"s3://{bucket}-q/",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pictguard.cli",
            "allow",
            f"s3://{bucket}/a/x.png",
            "--reason",
            "false positive: a drawing of a cat",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    restored = client.get_object(Bucket=bucket, Key="a/x.png")["Body"].read()
    assert restored == image  # byte-identical under its original key

    client.put_object(Bucket=bucket, Key="b/copy.png", Body=image)  # federated duplicate
    settings.classify.classifiers = ["hashlist", "nudenet"]
    second = await run_scan(settings, f"s3://{bucket}", resume=False)
    verdicts = {v.object.key: v for v, _ in second.notable if v.object}
    assert second.decisions == {Decision.ALLOW: 2}
    assert not verdicts  # nothing flagged or failed
    assert client.get_object(Bucket=bucket, Key="b/copy.png")["Body"].read() == image
    conn = sqlite3.connect(settings.storage.state_file)
    rows = conn.execute(
        "SELECT body FROM verdicts WHERE object_id = ? ORDER BY created_at",
        (f"s3://{bucket}/b/copy.png",),
    ).fetchall()
    conn.close()
    copy = json.loads(rows[-1][0])
    assert copy["matched"].startswith("allowlist")
    assert copy["classifiers"] == ["hashlist"]  # answered by the list: no model ran
    assert not any(k.startswith("model:") for k in copy.get("timings_ms", {}))
