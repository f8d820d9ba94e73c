"""Helpers of the feed tests: a static host for a published feed, a clock the test turns
by hand, and two pictguard instances' configurations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from typer.testing import CliRunner, Result

from pictguard.cli import app
from tests.fakes._server import FakeServer


class StaticHost(FakeServer):
    """Serves a folder over HTTP under ``/files/`` (nginx, a bucket's website endpoint)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_static("/files", self.root)
        return app

    def url_of(self, relative: str) -> str:
        return f"{self.url}/files/{relative}"


class ManualClock:
    """The feeds loop's ``wait``: each call marks a pull done and waits for :meth:`tick`
    (one interval passing)."""

    def __init__(self) -> None:
        self.pulls = 0
        self._ticks: asyncio.Queue[bool] = asyncio.Queue()
        self._changed = asyncio.Condition()

    async def wait(self) -> bool:
        async with self._changed:
            self.pulls += 1
            self._changed.notify_all()
        return await self._ticks.get()

    async def pulled(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` pulls are done."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.pulls >= count)

    async def tick(self) -> None:
        """One interval passes; returns once the pull it starts is done."""
        target = self.pulls + 1
        self._ticks.put_nowait(False)
        await self.pulled(target)

    def stop(self) -> None:
        self._ticks.put_nowait(True)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Until ``check()`` is true: a change another process made reaches a running
    instance through its table's follower (``SqliteTable.poll_s``)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Instance:
    """One pictguard instance: its own state folder and configuration file."""

    config: Path
    state: Path

    async def cli(self, *args: str) -> Result:
        """``pictguard -c <config> …``, in a thread (the command runs its own event loop).

        The command sets up logging to the runner's stream, closed afterwards: the test
        process's own handlers (pytest's capture) are put back.
        """
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        runner = CliRunner()
        try:
            return await asyncio.to_thread(
                runner.invoke, app, ["-c", str(self.config), *args], catch_exceptions=False
            )
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)


def instance(root: Path, name: str, **classify: Any) -> Instance:
    folder = root / name
    folder.mkdir(parents=True)
    config = folder / "pictguard.yaml"
    settings = {
        "storage": {"state_dir": str(folder / "state")},
        "classify": {"classifiers": ["hashlist"], **classify},
    }
    config.write_text(yaml.safe_dump(settings))
    return Instance(config, folder / "state")
