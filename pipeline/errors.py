"""The root of pictguard's exceptions.

Every error pictguard raises on purpose derives from :class:`PictguardError`, whose message
is written for the admin (what failed, and what to change). The CLI maps the whole family
to one line and an exit status (``exit_code``), so a new error type needs no list updated.
"""

from __future__ import annotations

from typing import ClassVar


class PictguardError(Exception):
    """An error whose message tells the admin what failed and what to do about it."""

    # The CLI's exit status when this stops a command: 2, "could not run as configured".
    exit_code: ClassVar[int] = 2
