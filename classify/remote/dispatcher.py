"""Leases: scan requests waiting for remote workers, who holds which, and until when.

The classify stage hands each request's bytes to :meth:`Dispatcher.submit` and awaits the
assessment; workers take requests with :meth:`Dispatcher.lease` (sync lane first) and
answer with :meth:`Dispatcher.answer`. A lease runs out ``classify.remote.lease_s`` after it
was given: its request goes back to the front of the queue for another worker, and the
late answer is refused. So every request gets exactly one accepted answer, whatever
workers die, stall or come back. Time for leases comes from an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import filetype

from classify.base import Assessment
from classify.remote.settings import RemoteSettings, WorkerAccount, WorkerProtocol
from pipeline import metrics
from pipeline.errors import PictguardError
from pipeline.events import Decision, ErrorReason, Findings, Lane, utcnow
from pipeline.retry import pause
from pipeline.stage import Abandoned
from pipeline.tokens import secret_matches

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# What fedi-safety's worker opens (Pillow, no plugins), and the file extension it is sent with.
FEDI_SAFETY_TYPES = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}
# Lease ids of recently ended leases, so a late answer is told "expired", not "unknown".
_REMEMBERED = 10_000
# How often leases are checked for expiry when no call comes in.
_REAP_EVERY_S = 0.5


class Refused(StrEnum):
    """Why an answer was not taken."""

    EXPIRED = "expired"  # the lease ran out (its request went back to the queue)
    NOT_LEASED = "not_leased"  # no such lease, or another worker's
    MISMATCH = "mismatch"  # the findings are about other bytes (sha256 differs)


class Unauthorized(PictguardError):
    """A worker API call without a valid token; ``reason`` is for metrics, never the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class Job:
    """One scan request's bytes, waiting for (or leased to) a remote worker."""

    request_id: str
    lane: Lane
    data: bytes
    content_type: str | None
    sha256: str
    deadline: datetime | None
    future: asyncio.Future[Assessment]
    kind: str | None = None  # media type sniffed from the bytes
    attempts: int = 0

    @property
    def extension(self) -> str:
        return FEDI_SAFETY_TYPES.get(self.kind or "", "bin")


@dataclass(eq=False)
class Lease:
    id: str
    job: Job
    worker: str
    issued: float
    expires: float


@dataclass(eq=False)
class Worker:
    """A configured worker and what the server knows of it now."""

    account: WorkerAccount
    last_seen: float | None = None
    leases: dict[str, Lease] = field(default_factory=dict)
    wants: int = 1  # the batch size it last asked for
    polling: int = 0  # lease calls waiting right now
    revoked: bool = False

    @property
    def id(self) -> str:
        return self.account.id


class Dispatcher:
    """The queue of requests for remote workers and their leases."""

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        clock: Clock = time.monotonic,
        flag_nsfw: bool = True,
        versions: tuple[str, str] = ("remote", ""),
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.flag_nsfw = flag_nsfw
        self.model_version, self.policy_version = versions
        self.workers = {a.id: Worker(a, revoked=a.revoked) for a in settings.workers}
        self._queues: dict[Lane, deque[Job]] = {Lane.SYNC: deque(), Lane.BULK: deque()}
        self._leases: dict[str, Lease] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # lease id → worker id
        self._changed = asyncio.Event()
        self._closed = False
        self._pictguard_workers = any(
            a.protocol is WorkerProtocol.PICTGUARD and not a.revoked for a in settings.workers
        )
        metrics.watch_remote_workers(
            {
                w.id: (lambda w=w: self.connected(w), lambda w=w: len(w.leases))  # type: ignore[misc]
                for w in self.workers.values()
            },
            {lane.value: (lambda lane=lane: len(self._queues[lane])) for lane in Lane},  # type: ignore[misc]
        )

    # -- who is calling ----------------------------------------------------------------

    def authenticate(self, token: str | None, protocol: WorkerProtocol) -> Worker:
        """The worker ``token`` belongs to, or :class:`Unauthorized`."""
        found: Worker | None = None
        # Compare against every token, so the time taken does not tell how close a guess was.
        for worker in self.workers.values():
            if secret_matches(token, worker.account.token):
                found = worker
        if found is None:
            raise Unauthorized("bad_token", "unknown or missing worker token")
        if found.revoked:
            raise Unauthorized("revoked", f"worker {found.id} is revoked")
        if found.account.protocol is not protocol:
            raise Unauthorized(
                "wrong_protocol",
                f"worker {found.id} is configured for the {found.account.protocol.value} "
                f"protocol, not {protocol.value}",
            )
        found.last_seen = self.clock()
        return found

    def connected(self, worker: Worker) -> bool:
        """Heard from within ``stale_s`` (or waiting in a lease call now), and not revoked."""
        if worker.revoked:
            return False
        if worker.polling:
            return True
        return (
            worker.last_seen is not None and self.clock() - worker.last_seen < self.settings.stale_s
        )

    @property
    def any_connected(self) -> bool:
        return any(self.connected(w) for w in self.workers.values())

    def revoke(self, worker_id: str) -> bool:
        """Refuse ``worker_id`` from now on; its leases go back to the queue at once.

        False if there is no such worker. Lasts until a restart: set ``revoked: true`` in
        the settings (or remove the worker) to make it permanent.
        """
        worker = self.workers.get(worker_id)
        if worker is None:
            return False
        worker.revoked = True
        for lease in list(worker.leases.values()):
            self._end(lease)
            lease.job.attempts -= 1  # not the request's fault
            self._queues[lease.job.lane].appendleft(lease.job)
        log.warning("remote worker %s revoked; its leases went back to the queue", worker_id)
        self._notify()
        return True

    # -- the classify stage's side -----------------------------------------------------

    async def submit(
        self,
        data: bytes,
        *,
        request_id: str,
        lane: Lane,
        content_type: str | None,
        sha256: str,
        deadline: datetime | None,
    ) -> Assessment:
        """Queue ``data`` for a worker and wait for the one accepted answer."""
        kind = filetype.guess_mime(data[:8192])
        if not self._pictguard_workers and kind not in FEDI_SAFETY_TYPES:
            # Only fedi-safety workers are configured, and they cannot open this.
            return self.error(
                ErrorReason.UNSUPPORTED_TYPE,
                f"{kind or 'unknown type'}: only fedi-safety workers are configured and they "
                f"read {', '.join(sorted(FEDI_SAFETY_TYPES.values()))}",
                sha256,
            )
        job = Job(
            request_id=request_id,
            lane=lane,
            data=data,
            content_type=content_type,
            sha256=sha256,
            deadline=deadline,
            future=asyncio.get_running_loop().create_future(),
            kind=kind,
        )
        self._queues[lane].append(job)
        self._notify()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._withdraw(job)
                raise
            # Withdrawn by close() at a stop: the request stays uncommitted on the bus.
            raise Abandoned(f"request {request_id} withdrawn at shutdown") from None

    async def wanted(self, lane: Lane) -> None:
        """Return once a worker is connected and could use more of ``lane``'s requests.

        The classify stage's consume loop waits here before it takes messages off the bus,
        so requests stay on the bus (for other consumers) while no worker wants them.
        """
        while not self._wants_more(lane):
            await self._wait_for_change(1.0)  # staleness is a matter of time: re-check

    def _wants_more(self, lane: Lane) -> bool:
        live = [w for w in self.workers.values() if self.connected(w)]
        if not live:
            return False
        capacity = sum(2 * max(w.wants, len(w.leases), 1) for w in live)
        waiting = len(self._queues[Lane.SYNC])
        if lane is Lane.BULK:
            waiting += len(self._queues[Lane.BULK])
        return waiting < capacity

    def queued(self, lane: Lane) -> int:
        return len(self._queues[lane])

    @property
    def leased(self) -> int:
        return len(self._leases)

    # -- the workers' side ---------------------------------------------------------------

    async def lease(self, worker: Worker, most: int, wait_s: float) -> list[Lease]:
        """Up to ``most`` requests, sync lane first, waiting up to ``wait_s`` for one."""
        most = max(1, min(most, self.settings.max_batch))
        worker.wants = most
        self._notify()  # a worker asking may open the consume loops' gate
        loop = asyncio.get_running_loop()
        until = loop.time() + min(wait_s, self.settings.long_poll_s)
        while True:
            self.expire()
            taken = self.take(worker, most)
            left = until - loop.time()
            if taken or worker.revoked or self._closed or left <= 0:
                worker.last_seen = self.clock()
                return taken
            worker.polling += 1
            try:
                await self._wait_for_change(left)
            finally:
                worker.polling -= 1

    def take(self, worker: Worker, most: int) -> list[Lease]:
        """Lease up to ``most`` queued requests that ``worker`` can classify, at once."""
        now = self.clock()
        wall = utcnow()
        taken: list[Lease] = []
        if self._closed:
            return taken
        for lane in (Lane.SYNC, Lane.BULK):
            queue = self._queues[lane]
            skipped: list[Job] = []
            while queue and len(taken) < most:
                job = queue.popleft()
                if job.future.done():
                    continue  # withdrawn or answered meanwhile
                if lane is Lane.SYNC and job.deadline is not None and job.deadline < wall:
                    self._resolve(job, self._late(job))
                    continue
                if not self._can_take(worker, job):
                    skipped.append(job)
                    continue
                job.attempts += 1
                lease = Lease(
                    secrets.token_urlsafe(16), job, worker.id, now, now + self.settings.lease_s
                )
                self._leases[lease.id] = lease
                worker.leases[lease.id] = lease
                taken.append(lease)
                metrics.record_remote_lease(worker.id, lane.value)
            queue.extendleft(reversed(skipped))
        return taken

    @staticmethod
    def _can_take(worker: Worker, job: Job) -> bool:
        if worker.account.protocol is WorkerProtocol.FEDI_SAFETY:
            return job.kind in FEDI_SAFETY_TYPES
        return True

    def content(self, worker: Worker, lease_id: str) -> Job | Refused:
        """The request behind ``worker``'s live lease ``lease_id``."""
        self.expire()
        lease = self._leases.get(lease_id)
        if lease is None or lease.worker != worker.id:
            return self._why_not(worker, lease_id)
        return lease.job

    def answer(self, worker: Worker, lease_id: str, findings: Findings) -> Refused | None:
        """Take ``worker``'s findings for its live lease ``lease_id``; else say why not."""
        self.expire()
        lease = self._leases.get(lease_id)
        if lease is None or lease.worker != worker.id:
            refused = self._why_not(worker, lease_id)
            metrics.record_remote_result(worker.id, refused.value)
            return refused
        job = lease.job
        if findings.sha256 is not None and findings.sha256 != job.sha256:
            # Broken or dishonest: the lease stays until it runs out and goes elsewhere.
            log.warning(
                "remote worker %s answered lease of request %s about other bytes",
                worker.id,
                job.request_id,
            )
            metrics.record_remote_result(worker.id, Refused.MISMATCH.value)
            return Refused.MISMATCH
        self._end(lease)
        held_s = self.clock() - lease.issued
        assessment = Assessment.model_validate(
            {**findings.model_dump(), "sha256": job.sha256, "worker": worker.id}
        )
        assessment.timings_ms["remote"] = round(held_s * 1000, 3)
        if assessment.decision is not Decision.ERROR and assessment.model_version:
            self.model_version = assessment.model_version
            self.policy_version = assessment.policy_version
        self._resolve(job, assessment)
        metrics.record_remote_result(worker.id, "accepted", held_s)
        self._notify()
        return None

    def fedi_safety_findings(self, worker: Worker, is_csam: bool, is_nsfw: bool) -> Findings:
        """A verdict from fedi-safety's two booleans, in the worker's name."""
        if is_csam:
            decision = Decision.FLAG_CSAM
        elif is_nsfw and self.flag_nsfw:
            decision = Decision.FLAG_NSFW
        else:
            decision = Decision.ALLOW
        labels = [name for name, on in (("csam", is_csam), ("nsfw", is_nsfw)) if on]
        return Findings(
            decision=decision,
            scores={"fedi-safety:csam": float(is_csam), "fedi-safety:nsfw": float(is_nsfw)},
            labels=[f"fedi-safety:{name}" for name in labels],
            classifiers=["fedi-safety"],
            model_version=f"fedi-safety:{worker.id}",
            policy_version="fedi-safety",
        )

    # -- expiry ------------------------------------------------------------------------

    def expire(self) -> int:
        """End every lease past its time: its request goes back to the front of its queue,
        or gets an error verdict after ``max_attempts`` leases. Returns how many ended."""
        now = self.clock()
        ended = [lease for lease in self._leases.values() if lease.expires <= now]
        for lease in ended:
            self._end(lease)
            metrics.record_remote_expiry(lease.worker)
            job = lease.job
            if job.future.done():
                continue
            if job.attempts >= self.settings.max_attempts:
                log.warning(
                    "request %s: %d leases ran out unanswered; giving it an error verdict",
                    job.request_id,
                    job.attempts,
                )
                self._resolve(
                    job,
                    self.error(
                        ErrorReason.MODEL_FAILED,
                        f"{job.attempts} remote workers took it and none answered within "
                        f"{self.settings.lease_s:g} s (an image that crashes workers?)",
                        job.sha256,
                    ),
                )
            else:
                log.info(
                    "lease of request %s by %s ran out; it goes to the next worker",
                    job.request_id,
                    lease.worker,
                )
                self._queues[job.lane].appendleft(job)
        if ended:
            self._notify()
        return len(ended)

    async def run(self, stop: asyncio.Event) -> None:
        """End expired leases and uploads past their deadline while no call does it; at a
        stop, withdraw what waits (it stays uncommitted on the bus for the next start)."""
        while not await pause(stop, _REAP_EVERY_S):
            self.expire()
            self._drop_late()
        self.close()

    def close(self) -> None:
        """Withdraw everything (shutdown): nothing waits for an answer any more, and lease
        calls waiting for work answer empty at once."""
        self._closed = True
        jobs = [lease.job for lease in self._leases.values()]
        for lease in list(self._leases.values()):
            self._end(lease)
        for queue in self._queues.values():
            jobs += queue
            queue.clear()
        for job in jobs:
            job.future.cancel()
        self._notify()

    # -- helpers -----------------------------------------------------------------------

    def error(self, reason: ErrorReason, detail: str, sha256: str | None = None) -> Assessment:
        return Assessment(
            decision=Decision.ERROR,
            reason=reason,
            detail=detail,
            sha256=sha256,
            model_version=self.model_version,
            policy_version=self.policy_version,
        )

    def _late(self, job: Job) -> Assessment:
        return self.error(
            ErrorReason.TIMEOUT, "deadline passed before a remote worker took it", job.sha256
        )

    def _drop_late(self) -> None:
        wall = utcnow()
        queue = self._queues[Lane.SYNC]
        late = [j for j in queue if j.deadline is not None and j.deadline < wall]
        for job in late:
            queue.remove(job)
            self._resolve(job, self._late(job))

    def _why_not(self, worker: Worker, lease_id: str) -> Refused:
        return Refused.EXPIRED if self._ended.get(lease_id) == worker.id else Refused.NOT_LEASED

    def _end(self, lease: Lease) -> None:
        self._leases.pop(lease.id, None)
        worker = self.workers.get(lease.worker)
        if worker is not None:
            worker.leases.pop(lease.id, None)
        self._ended[lease.id] = lease.worker
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)

    def _withdraw(self, job: Job) -> None:
        with contextlib.suppress(ValueError):
            self._queues[job.lane].remove(job)
        for lease in [lease for lease in self._leases.values() if lease.job is job]:
            self._end(lease)
        if not job.future.done():
            job.future.cancel()

    @staticmethod
    def _resolve(job: Job, assessment: Assessment) -> None:
        if not job.future.done():
            job.future.set_result(assessment)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, seconds: float) -> None:
        changed = self._changed
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
