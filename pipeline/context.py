"""What a role is handed when it runs: the contract between the composition root and roles.

A role never imports ``pictguard`` (the root): it receives a :class:`RoleContext`, built by
the root for this process's :class:`Mode`, and reads its own settings section through it.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from enum import StrEnum
from typing import Protocol, TypeVar

from pipeline.bus.base import Bus
from pipeline.health import Health
from pipeline.state.shared import SharedTables
from pipeline.state.sqlite import SqliteState
from pipeline.storage.locations import Stores

SettingsT_co = TypeVar("SettingsT_co", covariant=True)


class Mode(StrEnum):
    """How this process runs: every role on the in-process bus, or one role on Kafka."""

    SINGLE = "single"
    DISTRIBUTED = "distributed"


class RoleContext(Protocol[SettingsT_co]):
    """What a running process opened for its roles; closed together at the end."""

    @property
    def settings(self) -> SettingsT_co: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def bus(self) -> Bus: ...

    @property
    def stores(self) -> Stores: ...

    @property
    def state(self) -> SqliteState: ...

    @property
    def tables(self) -> SharedTables: ...

    @property
    def stop(self) -> asyncio.Event:
        """Set on SIGTERM/SIGINT or when a loop fails: every loop finishes and returns."""
        ...

    @property
    def health(self) -> Health:
        """Readiness checks behind ``/readyz``; a role adds its own."""
        ...

    @property
    def cleanups(self) -> AsyncExitStack:
        """Register what a role opens here; it is closed in reverse order at the end."""
        ...
