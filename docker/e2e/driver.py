"""End-to-end driver: real pict-rs 0.5 + Lemmy 0.19 + pictguard, and the fakes beside them.

UNTESTED on pictguard's development machines (no container engine there). Run through
./run.sh on a host with Docker; see README.md.

``prepare`` writes two harmless generated images into the work folder (the blocked one is
put on pictguard's blocklist by run.sh before pictguard starts). ``check`` then drives the
real stack and the fakes (tests/fakes) through the same probes, and reports:

- FAIL: a real-stack expectation that does not hold (an upload of the blocked image must
  be refused by pict-rs through pictguard, the clean one kept, purge must remove it, …);
- FAIL: a probe whose status code, or whose exact error body, differs between real and fake;
- WARN (FAIL with --strict): JSON shapes (keys and value types) that differ.

A difference means a fake drifted from the real server: fix the fake (and docs/fakes.md).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from pipeline.samples import image_bytes
from tests.fakes import FakeLemmy, FakePictrs, FilesystemStore, RecordingEndpoint
from tests.fakes.recorder import Recorded

PICTRS_KEY = "e2e-pictrs-api-key"
ADMIN = ("e2eadmin", "e2e-admin-password")
IDENTIFIER = re.compile(r"^(?:[0-9a-f]{2}/){10}[0-9a-f]{12}\.[a-z]+$")


@dataclass
class Probe:
    status: int
    body: Any


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            self.failures.append(what)


def shape(value: Any) -> Any:
    """Keys and value types, recursively (a list by its first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def shape_diff(real: Any, fake: Any, path: str = "$") -> list[str]:
    if isinstance(real, dict) and isinstance(fake, dict):
        out = []
        for key in sorted(set(real) | set(fake)):
            if key not in fake:
                out.append(f"{path}.{key}: only in real")
            elif key not in real:
                out.append(f"{path}.{key}: only in fake")
            else:
                out.extend(shape_diff(real[key], fake[key], f"{path}.{key}"))
        return out
    if isinstance(real, list) and isinstance(fake, list):
        return shape_diff(real[0], fake[0], f"{path}[0]") if real and fake else []
    return [] if real == fake else [f"{path}: real {real}, fake {fake}"]


def call(method: str, url: str, **kw: Any) -> Probe:
    response = httpx.request(method, url, timeout=30, **kw)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return Probe(response.status_code, body)


def multipart(data: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images[]", ("image.png", data, "image/png"))]


def wait_for(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up within {timeout:.0f} s")
        time.sleep(2)


def pictrs_probes(
    base: str, clean: bytes, blocked: bytes, report: Report, label: str
) -> dict[str, Probe]:
    token = {"X-Api-Token": PICTRS_KEY}
    probes: dict[str, Probe] = {}
    probes["upload_clean"] = up = call("POST", f"{base}/image", files=multipart(clean))
    report.expect(up.status == 201, f"{label} pict-rs keeps the clean upload (201)")
    alias = up.body["files"][0]["file"] if up.status == 201 else "missing.png"
    probes["upload_blocked"] = call("POST", f"{base}/image", files=multipart(blocked))
    probes["internal_without_token"] = call("GET", f"{base}/internal/hashes")
    probes["hashes"] = page = call(
        "GET", f"{base}/internal/hashes", params={"limit": 5}, headers=token
    )
    probes["aliases"] = call(
        "GET", f"{base}/internal/aliases", params={"alias": alias}, headers=token
    )
    probes["identifier"] = ident = call(
        "GET", f"{base}/internal/identifier", params={"alias": alias}, headers=token
    )
    probes["details"] = call("GET", f"{base}/image/details/original/{alias}")
    probes["purge_unknown"] = call(
        "POST", f"{base}/internal/purge", params={"alias": "nope.png"}, headers=token
    )
    probes["delete_unknown"] = call(
        "POST", f"{base}/internal/delete", params={"alias": "nope.png"}, headers=token
    )
    original = httpx.get(f"{base}/image/original/{alias}", timeout=30)
    hashes = page.body["page"]["hashes"] if page.status == 200 else []
    report.expect(len(hashes) == 1, f"{label} only the clean image is stored (one hash)")
    if hashes:
        report.expect(
            hashes[0]["hex"][:64] == hashlib.sha256(original.content).hexdigest(),
            f"{label} hash = sha256 of the stored bytes ‖ size ‖ format",
        )
    if ident.status == 200:
        report.expect(
            bool(IDENTIFIER.match(ident.body["identifier"])), f"{label} 0.5.7+ storage layout"
        )
    probes["purge"] = call("POST", f"{base}/internal/purge", params={"alias": alias}, headers=token)
    deadline = time.monotonic() + 30  # pict-rs queues the cleanup
    while httpx.get(f"{base}/image/original/{alias}", timeout=30).status_code != 404:
        if time.monotonic() > deadline:
            report.expect(False, f"{label} purged media answers 404")
            break
        time.sleep(0.5)
    return probes


def lemmy_probes(
    base: str, clean: bytes, blocked: bytes, report: Report, label: str
) -> dict[str, Probe]:
    api = f"{base}/api/v3"
    probes: dict[str, Probe] = {}
    probes["login"] = login = call(
        "POST", f"{api}/user/login", json={"username_or_email": ADMIN[0], "password": ADMIN[1]}
    )
    probes["login_wrong"] = call(
        "POST", f"{api}/user/login", json={"username_or_email": ADMIN[0], "password": "x"}
    )
    auth = {"Authorization": f"Bearer {login.body.get('jwt', '')}"} if login.status == 200 else {}
    probes["upload_clean"] = up = call(
        "POST", f"{base}/pictrs/image", files=multipart(clean), headers=auth
    )
    probes["upload_blocked"] = call(
        "POST", f"{base}/pictrs/image", files=multipart(blocked), headers=auth
    )
    alias = up.body["files"][0]["file"] if up.status == 201 else "missing.png"
    probes["media_without_auth"] = call("GET", f"{api}/admin/list_all_media")
    probes["media"] = media = call("GET", f"{api}/admin/list_all_media", headers=auth)
    aliases = (
        [m["local_image"]["pictrs_alias"] for m in media.body.get("images", [])]
        if media.status == 200
        else []
    )
    report.expect(alias in aliases, f"{label} Lemmy lists the upload with its uploader")
    name = f"e2e{int(time.time())}"
    probes["community"] = community = call(
        "POST", f"{api}/community", json={"name": name, "title": name}, headers=auth
    )
    community_id = (
        community.body["community_view"]["community"]["id"] if community.status == 200 else 0
    )
    image_url = f"{base}/pictrs/image/{alias}"
    post_body = {"name": "e2e", "community_id": community_id, "url": image_url}
    probes["post"] = post = call("POST", f"{api}/post", json=post_body, headers=auth)
    post_id = post.body["post_view"]["post"]["id"] if post.status == 200 else 0
    probes["search_url"] = call(
        "GET", f"{api}/search", params={"q": image_url, "type_": "Url"}, headers=auth
    )
    probes["purge_post"] = call(
        "POST", f"{api}/admin/purge/post", json={"post_id": post_id}, headers=auth
    )
    probes["purge_unknown_post"] = call(
        "POST", f"{api}/admin/purge/post", json={"post_id": 999999}, headers=auth
    )
    return probes


EXACT = {  # probes whose whole body must match between real and fake
    "pictrs": {"upload_blocked", "internal_without_token", "purge_unknown", "delete_unknown"},
    "lemmy": {
        "login_wrong",
        "upload_blocked",
        "media_without_auth",
        "purge_post",
        "purge_unknown_post",
    },
}


def compare(system: str, real: dict[str, Probe], fake: dict[str, Probe], report: Report) -> None:
    for name in sorted(real):
        r, f = real[name], fake[name]
        report.expect(
            r.status == f.status, f"{system}.{name}: status real {r.status} / fake {f.status}"
        )
        if name in EXACT[system]:
            report.expect(
                r.body == f.body, f"{system}.{name}: body real {r.body!r} / fake {f.body!r}"
            )
        else:
            for diff in shape_diff(shape(r.body), shape(f.body)):
                print(f"WARN  {system}.{name}: {diff}")
                report.warnings.append(f"{system}.{name}: {diff}")


@contextmanager
def fakes(clean: bytes, blocked: bytes) -> Iterator[tuple[str, str]]:
    """FakePictrs (validated by an endpoint that refuses the blocked image, as pictguard
    does) and FakeLemmy in front of it, seeded with the same admin."""
    blocked_sha = hashlib.sha256(blocked).hexdigest()

    def verdict(request: Recorded) -> int:
        return 406 if hashlib.sha256(request.body).hexdigest() == blocked_sha else 200

    with (
        TemporaryDirectory() as tmp,
        RecordingEndpoint(respond=verdict) as validator,
        FakePictrs(
            FilesystemStore(Path(tmp)), api_key=PICTRS_KEY, external_validation=validator.url
        ) as pictrs,
        FakeLemmy(pictrs_url=pictrs.url, pictrs_api_key=PICTRS_KEY) as lemmy,
    ):
        lemmy.add_person(ADMIN[0], password=ADMIN[1], admin=True)
        yield pictrs.url, lemmy.url


def prepare(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "clean.png").write_bytes(image_bytes(1001, "PNG", 256))
    (work / "blocked.png").write_bytes(image_bytes(1002, "PNG", 256))
    print(f"wrote {work}/clean.png and {work}/blocked.png")


def check(args: argparse.Namespace) -> int:
    clean = (args.work / "clean.png").read_bytes()
    blocked = (args.work / "blocked.png").read_bytes()
    for url in (f"{args.pictguard}/healthz", f"{args.pictrs}/healthz", f"{args.lemmy}/api/v3/site"):
        wait_for(url)
    report = Report()
    real_pictrs = pictrs_probes(args.pictrs, clean, blocked, report, "real")
    real_lemmy = lemmy_probes(args.lemmy, clean, blocked, report, "real")
    report.expect(
        real_pictrs["upload_blocked"].status == 400, "real pict-rs refuses the blocklisted upload"
    )
    report.expect(
        real_pictrs["upload_blocked"].body
        == {"msg": "Failed external validation", "code": "failed-external-validation"},
        "real pict-rs answers failed-external-validation",
    )
    with fakes(clean, blocked) as (fake_pictrs_url, fake_lemmy_url):
        fake_pictrs = pictrs_probes(fake_pictrs_url, clean, blocked, report, "fake")
        fake_lemmy = lemmy_probes(fake_lemmy_url, clean, blocked, report, "fake")
    compare("pictrs", real_pictrs, fake_pictrs, report)
    compare("lemmy", real_lemmy, fake_lemmy, report)
    print(f"\n{len(report.failures)} failure(s), {len(report.warnings)} shape warning(s)")
    return 1 if report.failures or (args.strict and report.warnings) else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, default=Path(__file__).parent / "work")
    c = sub.add_parser("check")
    c.add_argument("--work", type=Path, default=Path(__file__).parent / "work")
    c.add_argument("--pictrs", default="http://127.0.0.1:18080")
    c.add_argument("--lemmy", default="http://127.0.0.1:18536")
    c.add_argument("--pictguard", default="http://127.0.0.1:18081")
    c.add_argument("--strict", action="store_true", help="shape differences fail the run too")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.work)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
