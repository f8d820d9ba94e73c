"""The quarantine as an admin meets it through ``pictguard``: where it goes by default, a
public quarantine bucket stopping a scan, a quarantine inside the scanned bucket that a
rescan never lists, and ``block FILE`` that leaves the admin's file alone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import uuid
from pathlib import Path
from typing import Any

from pipeline.events import Decision
from tests.admin_cli import pictguard, write_config
from tests.enforce.helpers import enforce_verdicts, exists, make_settings, verdict_for
from tests.exposure import make_public
from tests.media import pdq_distance, pdq_hash, photo_jpeg, screenshot_png, webp_image
from tests.servers import S3Server


def media_set() -> dict[str, bytes]:
    return {
        "2024/beach.jpg": photo_jpeg(51, 1024, 768),
        "2024/chat.png": screenshot_png(52, 800, 600),
        "2024/flagged.jpg": photo_jpeg(53, 800, 600),
        "2025/dog.webp": webp_image(54, 640, 480),
    }


def block(config: Path, data: bytes) -> None:
    done = pictguard(config, "block", hashlib.sha256(data).hexdigest(), "--reason", "known")
    assert done.returncode == 0, done.stderr + done.stdout


def scan_json(config: Path, target: str, status: int = 0) -> dict[str, Any]:
    """The summary of ``pictguard scan --json``; ``status``: 1 when it flags something."""
    done = pictguard(config, "scan", target, "--json")
    assert done.returncode == status, done.stderr + done.stdout
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_folder_scan_quarantines_into_a_private_folder_under_the_state_dir(
    tmp_path: Path, s3_server: S3Server
) -> None:
    media = tmp_path / "media"
    images = media_set()
    for key, data in images.items():
        (media / key).parent.mkdir(parents=True, exist_ok=True)
        (media / key).write_bytes(data)
    config = write_config(tmp_path, s3_server)
    block(config, images["2024/flagged.jpg"])

    summary = scan_json(config, str(media), status=1)

    assert summary["flag_csam"] == 1
    assert summary["actions"] == {"quarantine:done": 1}
    quarantine = tmp_path / "state" / "quarantine"
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700  # nobody else may enter it
    copy = quarantine / "file" / str(media.resolve()).lstrip("/") / "2024" / "flagged.jpg"
    assert copy.read_bytes() == images["2024/flagged.jpg"]
    assert not (media / "2024" / "flagged.jpg").exists()
    again = scan_json(config, str(media))
    assert (again["scanned"], again["flagged"]) == (3, 0)


def test_scan_refuses_to_quarantine_into_a_public_bucket(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    s3: Any = s3_server.client()
    qbucket = f"pub-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=qbucket)
    make_public(s3, qbucket, "get-star")  # {"Action": "s3:Get*", "Principal": "*"}
    images = media_set()
    for key, data in images.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    config = write_config(tmp_path, s3_server, enforce={"quarantine": f"s3://{qbucket}/held/"})

    done = pictguard(config, "scan", f"s3://{bucket}")

    assert done.returncode == 2, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: refusing to quarantine")
    assert f"s3://{qbucket}/held/ is publicly readable" in line
    assert "public access block" in line  # what to fix
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == set(images)
    assert pictguard(config, "scan", f"s3://{bucket}", "--dry-run").returncode == 0


def test_a_quarantine_prefix_in_the_scanned_bucket_is_never_scanned_again(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """Before, a rescan listed the quarantined copies and flagged them all again."""
    s3: Any = s3_server.client()
    images = media_set()
    for key, data in images.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    config = write_config(tmp_path, s3_server, enforce={"quarantine": "quarantine/"})
    block(config, images["2024/flagged.jpg"])

    first = scan_json(config, f"s3://{bucket}", status=1)
    assert (first["scanned"], first["actions"]) == (4, {"quarantine:done": 1})
    copy = f"quarantine/s3/{bucket}/2024/flagged.jpg"
    assert s3.get_object(Bucket=bucket, Key=copy)["Body"].read() == images["2024/flagged.jpg"]

    again = scan_json(config, f"s3://{bucket}")
    assert (again["scanned"], again["flagged"], again["actions"]) == (3, 0, {})
    assert exists(s3, bucket, copy)


def test_block_file_hashes_it_and_acts_only_on_stored_copies(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """Before, ``block FILE`` moved the admin's own file into quarantine (evidence gone)
    and stored no PDQ."""
    s3: Any = s3_server.client()
    data = photo_jpeg(61, 1024, 768)
    s3.put_object(Bucket=bucket, Key="u/42/upload.jpg", Body=data, ContentType="image/jpeg")
    settings = make_settings(s3_server, tmp_path, "t.")
    # Scanned earlier and let through (the model missed it): a known stored copy.
    asyncio.run(
        enforce_verdicts(
            settings, verdict_for(bucket, "u/42/upload.jpg", Decision.ALLOW, data=data)
        )
    )
    evidence = tmp_path / "reports" / "from-a-user.jpg"
    evidence.parent.mkdir()
    evidence.write_bytes(data)
    config = write_config(tmp_path, s3_server)

    done = pictguard(config, "block", str(evidence), "--reason", "reported", "--json")

    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert evidence.read_bytes() == data  # the named file stays, byte for byte
    assert [p.name for p in evidence.parent.iterdir()] == ["from-a-user.jpg"]
    entry = result["entry"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["pdq"] and pdq_distance(entry["pdq"], pdq_hash(data)[0]) <= 16
    assert [(a["object"]["key"], a["action"], a["outcome"]) for a in result["actions"]] == [
        ("u/42/upload.jpg", "quarantine", "done")
    ]
    assert not exists(s3, bucket, "u/42/upload.jpg")
    assert "only hashed" in result["summary"]
