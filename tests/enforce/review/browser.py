"""A real browser for the console tests: Debian's Chromium, driven by Playwright.

``make test`` installs the ``chromium`` package (Playwright's own browser download cannot
work here); the tests skip with that hint where it is missing. The console under test is
``pictguard review`` itself, started as an admin would start it, on a port of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_browser() -> None:
    """Skip (with the fix) where Playwright or Chromium is missing."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test does)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: `make test` installs Debian's chromium package")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """A running ``pictguard review``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    bodies: list[bytes] = field(default_factory=list)

    def page_url(self, path: str = "") -> str:
        return f"{self.url}/admin/review{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def review_console(config_file: Path, workdir: Path) -> Iterator[Console]:
    """``pictguard -c CONFIG review --port P`` until the test ends (SIGTERM, then wait)."""
    port = free_port()
    log = workdir / f"review-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTGUARD_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pictguard.cli",
            "-c",
            str(config_file),
            "review",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    console = Console(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_until(
            lambda: proc.poll() is not None or "review console on" in console.output(),
            timeout=90,
            what="pictguard review to listen",
        )
        assert proc.poll() is None, console.output()
        yield console
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def sign_in(page: Any, console: Console, token: str, name: str = "") -> None:
    """Sign in through the form, as a reviewer does."""
    page.goto(console.page_url("/sign-in"))
    page.fill("input[name=token]", token)
    if name:
        page.fill("input[name=name]", name)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/review/queue")


def record_bodies(page: Any, into: list[tuple[str, bytes]]) -> None:
    """Keep every response body the browser receives (to prove what it never got)."""

    def keep(response: Any) -> None:
        # Redirects and aborted loads have no body.
        with contextlib.suppress(Exception):
            into.append((response.url, response.body()))

    page.on("response", keep)


def save_screenshot(page: Any, name: str, tmp: Path) -> Path:
    """A full-page PNG in ``tmp``; copied to docs/ when ``REVIEW_SCREENSHOTS_TO=docs``.

    (Not a PICTGUARD_* variable: the test session clears those.)
    """
    path = tmp / f"review-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("REVIEW_SCREENSHOTS_TO") == "docs":
        shutil.copy(path, Path(__file__).resolve().parents[3] / "docs" / path.name)
    return path
