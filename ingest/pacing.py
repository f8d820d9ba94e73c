"""Pacing and progress for long listings: a rate limit, an estimated total, an ETA, ``--since``.

A backfill of a large bucket can run for days; admins want to cap its load on the store
and the classifiers (objects per second), to see how far it got and when it will end, and to
limit it to recent objects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class RateLimiter:
    """Token bucket shared by concurrent listers: at most ``rate`` objects per second.

    ``burst`` (default: one second's worth, at least 1) is how many may go at once after a
    pause.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = asyncio.Lock()

    def batch_size(self, wanted: int) -> int:
        """A batch no larger than the bucket, so waiting stays smooth at low rates."""
        return max(1, min(wanted, int(self.burst)))

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` objects may go."""
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                # A request larger than the bucket goes once the bucket is full.
                need = min(float(n), self.burst)
                if self._tokens >= need:
                    self._tokens -= n
                    return
                await self._sleep((need - self._tokens) / self.rate)


@dataclass(slots=True)
class Progress:
    """Where a listing stands. ``total`` counts admitted objects; final once ``counted``."""

    started: float
    listed: int = 0
    produced: int = 0
    filtered: int = 0
    too_old: int = 0
    total: int | None = None
    counted: bool = False
    resumed: int = 0  # objects before the checkpoints, done by an earlier run
    now: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.now - self.started)

    @property
    def rate(self) -> float:
        """Scan requests produced per second in this run."""
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until every admitted object has a scan request, if that can be told."""
        if self.total is None or not self.counted or self.rate <= 0:
            return None
        return max(0, self.total - self.produced) / self.rate
