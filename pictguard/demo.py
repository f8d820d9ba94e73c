"""``make demo``: a sample bucket on an embedded S3 server, scanned end to end.

It starts a loopback S3 server (moto) with a generated bucket — harmless images in
pict-rs-style keys, one of them on the blocklist, one corrupt JPEG and one PDF — then runs
exactly the commands an admin would type and prints what happened. Nothing objectionable
is involved: the "known bad" image is a random pattern whose hash the demo blocklists.

The demo runs the hash lists and NudeNet (``classify.classifiers: [hashlist, nudenet]``);
CLIP, the model that recognises CSAM nobody has hashed yet, needs torch and its weights
(``pip install '.[clip]'``, then ``pictguard models --download``).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from pipeline.samples import corrupt_bytes, image_bytes, non_image_bytes

console = Console()
BUCKET = "demo-media"
QUARANTINE = "demo-quarantine"


def pictrs_key(i: int, ext: str) -> str:
    """A key shaped like pict-rs ≥ 0.5.7 object keys: ten 2-hex folders, a 12-hex name."""
    h = hashlib.sha256(str(i).encode()).hexdigest()
    folders = "/".join(h[j : j + 2] for j in range(0, 20, 2))
    return f"{folders}/{h[20:32]}.{ext}"


def run(cmd: list[str], env: dict[str, str]) -> int:
    shown = " ".join(shlex.quote(c) for c in ["pictguard", *cmd[3:]])
    console.print(f"\n[bold cyan]$ {shown}[/]")
    rc = subprocess.run(cmd, env=env, check=False).returncode
    console.print(f"[dim](exit status {rc})[/]")
    return rc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        console.print(
            "[red]the demo needs its extra: run `make demo` (or pip install '.\\[demo]')[/]"
        )
        return 2
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="pictguard-demo-"))
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=QUARANTINE)
        for i in range(40):
            fmt = "JPEG" if i % 2 else "PNG"
            s3.put_object(
                Bucket=BUCKET,
                Key=pictrs_key(i, fmt.lower().replace("jpeg", "jpg")),
                Body=image_bytes(i, fmt, 256),
            )
        known_bad = image_bytes(4242, "PNG", 256)
        bad_key = pictrs_key(4242, "png")
        s3.put_object(Bucket=BUCKET, Key=bad_key, Body=known_bad)
        corrupt_key = pictrs_key(777, "jpg")
        s3.put_object(Bucket=BUCKET, Key=corrupt_key, Body=corrupt_bytes(777))
        pdf, _ = non_image_bytes(0)
        s3.put_object(Bucket=BUCKET, Key="backups/instance-backup.pdf", Body=pdf)
        (work / "known-bad.png").write_bytes(known_bad)
        console.rule("[bold]pictguard demo")
        console.print(
            f"Embedded S3 server at {endpoint} with bucket [bold]{BUCKET}[/]: 40 clean images, "
            f"1 image on the blocklist ({bad_key}), 1 corrupt JPEG ({corrupt_key}), 1 PDF.\n"
            f"Flagged CSAM is quarantined to s3://{QUARANTINE}/ (the default action).\n"
            "Classifiers: the hash lists and NudeNet. CLIP, which recognises CSAM that is on "
            "no hash list, is not part of the demo (it needs torch and its weights), so the "
            "scan warns that no CSAM-capable classifier ran."
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
        env.update(
            PICTGUARD_S3__ENDPOINT_URL=endpoint,
            PICTGUARD_S3__ACCESS_KEY_ID="demo",
            PICTGUARD_S3__SECRET_ACCESS_KEY="demo",
            PICTGUARD_STORAGE__STATE_DIR=str(work / "state"),
            PICTGUARD_ENFORCE__QUARANTINE=f"s3://{QUARANTINE}/",
            PICTGUARD_CLASSIFY__CLASSIFIERS="hashlist,nudenet",
            PICTGUARD_LOG__LEVEL="ERROR",
        )
        cli = [sys.executable, "-m", "pictguard"]
        rc = run(
            [
                *cli,
                "hashes",
                "add",
                "--block",
                "--reason",
                "demo: known bad image",
                str(work / "known-bad.png"),
            ],
            env,
        )
        # Exit status 1: something was flagged (as clamscan: 0 nothing found, 1 found).
        scanned = run([*cli, "scan", f"s3://{BUCKET}"], env)
        quarantined = [o["Key"] for o in s3.list_objects_v2(Bucket=QUARANTINE).get("Contents", [])]
        still_there = s3.list_objects_v2(Bucket=BUCKET, Prefix=bad_key).get("KeyCount", 0)
        console.print(
            f"\nQuarantine bucket now holds: {quarantined or 'nothing'}; the original is "
            f"{'still in place' if still_there else 'gone from ' + BUCKET}."
        )
        console.print(
            "\nA second scan of the same bucket acts on nothing twice: what the first one "
            "reported shows as already handled."
        )
        again = run([*cli, "scan", f"s3://{BUCKET}"], env)
        rc = rc or run([*cli, "audit"], env)
        ok = (
            rc == 0 and scanned == 1 and again == 0 and quarantined == [bad_key] and not still_there
        )
        console.rule("[bold green]demo finished" if ok else "[bold red]demo failed")
        return 0 if ok else 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
