"""A remote classifier worker: ``pictguard run classify --remote https://INSTANCE``.

It only makes outbound HTTPS requests: it leases scan requests from the instance's worker
API (long poll, batches sized for its GPU), downloads each request's bytes, runs the
normal :class:`~classify.engine.ClassifyEngine` here and posts the findings. It holds a
worker token and nothing else — no broker or storage credentials. Hash lists and the
verdict cache stay on the server, which checks them before anything is leased.

Several lease calls stay open at once (``classify.worker.pullers``): while one batch is on
the model, the next is already being fetched. A stop (SIGTERM) finishes and answers the
batches in hand; requests leased at that instant go to another worker when their lease
runs out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from classify.base import Assessment
from classify.engine import ClassifyEngine
from classify.remote.protocol import (
    LEASE_PATH,
    VERDICTS_PATH,
    Answered,
    LeaseCall,
    Leased,
    LeasedJob,
    Result,
    ResultsCall,
)
from pipeline import metrics
from pipeline.errors import PictguardError
from pipeline.events import Decision, ErrorReason, Findings, Lane
from pipeline.retry import pause
from pipeline.settings import SettingsError

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# A lease call is answered within the server's long poll (at most 55 s) plus this.
_LEASE_SLACK_S = 10.0


class InsecureURL(SettingsError):
    """A worker URL that would send the token and the images in clear text."""


class WorkerRefused(SettingsError):
    """The server refused this worker's token (unknown, revoked or another protocol's)."""


class _Retry(PictguardError):
    def __init__(self, why: str, delay: float | None = None) -> None:
        super().__init__(why)
        self.delay = delay


def check_url(url: str) -> httpx.URL:
    """The server URL, if it is https:// or plain http:// to a loopback address."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InsecureURL(f"--remote {url!r} is not a URL ({exc})") from None
    if parsed.scheme == "https" and parsed.host:
        return parsed
    if parsed.scheme == "http" and parsed.host and _loopback(parsed.host):
        return parsed
    if parsed.scheme == "http":
        raise InsecureURL(
            f"refusing {url}: plain http:// would send the worker token and the images "
            "unencrypted — use https:// (plain http is allowed only to a loopback address)"
        )
    raise InsecureURL(f"--remote {url!r}: give the instance's API as https://host[:port]")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RemoteWorker:
    """Leases, classifies and answers until ``stop`` is set."""

    def __init__(
        self,
        url: str,
        token: str,
        engine: ClassifyEngine,
        *,
        max_batch: int,
        pullers: int = 2,
        wait_s: float = 20.0,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
        max_object_bytes: int = 50 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = check_url(url)
        self.engine = engine
        self.max_batch = max_batch
        self.pullers = pullers
        self.wait_s = wait_s
        self.max_object_bytes = max_object_bytes
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        self.client = httpx.AsyncClient(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s),
            verify=verify,
            transport=transport,
            limits=httpx.Limits(max_connections=max(16, max_batch * pullers)),
        )
        self.worker_id: str | None = None
        self.connected = False  # the last call reached the server
        self._problem: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run the pullers until ``stop``; a refused token ends the run with WorkerRefused."""
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self.pullers):
                    group.create_task(self._pull(stop), name=f"puller-{n}")
        except* WorkerRefused as refused:
            stop.set()
            raise refused.exceptions[0] from None
        finally:
            await self.client.aclose()

    async def _pull(self, stop: asyncio.Event) -> None:
        delay = RETRY_FIRST_S
        while not stop.is_set():
            try:
                leased = await self._lease(stop)
            except _Retry as retry:
                self._trouble(str(retry))
                if await pause(stop, retry.delay if retry.delay is not None else delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            if leased is None or not leased.jobs:
                continue
            loop = asyncio.get_running_loop()
            await self._work(leased.jobs, loop.time() + leased.expires_in_s)

    async def _lease(self, stop: asyncio.Event) -> Leased | None:
        """The next lease, or None when ``stop`` came first."""
        body = LeaseCall(max=self.max_batch, wait_s=self.wait_s).model_dump()
        call = asyncio.ensure_future(
            self._call("POST", LEASE_PATH, json=body, timeout=self.wait_s + _LEASE_SLACK_S)
        )
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({call, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not call.done():
            call.cancel()  # stopping: what it would have leased goes to another worker
            await asyncio.gather(call, return_exceptions=True)
            return None
        leased = Leased.model_validate_json(call.result().content)
        if self.worker_id is None:
            self.worker_id = leased.worker
            log.info("leasing scan requests from %s as worker %s", self.base, leased.worker)
        return leased

    async def _work(self, jobs: Sequence[LeasedJob], deadline: float) -> None:
        """Classify ``jobs``; an upload's answer goes out at once, bulk ones together."""

        async def one(job: LeasedJob) -> Result | None:
            findings = await self._classify(job)
            if findings is None:
                return None
            result = Result(lease=job.lease, findings=findings)
            if job.lane is Lane.SYNC:
                await self._answer([result], deadline)  # a person's upload is waiting
                return None
            return result

        results = await asyncio.gather(*(one(job) for job in jobs))
        bulk = [r for r in results if r is not None]
        if bulk:
            await self._answer(bulk, deadline)

    async def _classify(self, job: LeasedJob) -> Findings | None:
        """The findings for ``job``, or None when its lease is gone already."""
        if job.size > self.max_object_bytes:
            return self._too_big(job.size)
        try:
            response = await self._call("GET", job.content)
        except _Retry as retry:
            log.warning("could not download request %s: %s", job.request_id, retry)
            return None  # its lease runs out and another worker gets it
        except _Gone:
            return None
        assessment: Assessment = await self.engine.evaluate(
            response.content, content_type=job.content_type, lane=job.lane
        )
        return Findings.model_validate(assessment.model_dump())

    def _too_big(self, size: int) -> Findings:
        return Findings(
            decision=Decision.ERROR,
            reason=ErrorReason.OBJECT_TOO_BIG,
            detail=f"{size} bytes exceeds {self.max_object_bytes}",
            model_version=self.engine.model_version,
            policy_version=self.engine.policy_version,
        )

    async def _answer(self, results: list[Result], deadline: float) -> None:
        """Post ``results``, retrying while their leases last."""
        body = ResultsCall(results=results).model_dump(mode="json", exclude_none=True)
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        while True:
            try:
                response = await self._call("POST", VERDICTS_PATH, json=body)
            except _Retry as retry:
                if loop.time() + delay >= deadline:
                    log.warning(
                        "%d results lost: the server was not reachable before their leases "
                        "ran out (%s); the requests go to another worker",
                        len(results),
                        retry,
                    )
                    metrics.record_remote_client_result("lost", len(results))
                    return
                await asyncio.sleep(retry.delay if retry.delay is not None else delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            answered = Answered.model_validate_json(response.content)
            metrics.record_remote_client_result("accepted", len(answered.accepted))
            if answered.refused:
                metrics.record_remote_client_result("refused", len(answered.refused))
                log.warning(
                    "the server refused %d results: %s",
                    len(answered.refused),
                    ", ".join(sorted(set(answered.refused.values()))),
                )
            return

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; refusals of the token raise WorkerRefused, passing trouble _Retry."""
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach {self.base} ({exc.__class__.__name__})") from None
        if response.status_code in (401, 403):
            raise WorkerRefused(
                f"{self.base} refused this worker's token (unknown, revoked, or configured "
                "for the fedi-safety protocol) — check PICTGUARD_CLASSIFY__WORKER__TOKEN "
                "against the server's classify.remote.workers"
            )
        if response.status_code in (404, 410) and method == "GET":
            raise _Gone
        if response.status_code == 429:
            after = response.headers.get("retry-after", "1")
            raise _Retry("rate limited by the server", float(after) if after.isdigit() else 1.0)
        if response.status_code >= 400:
            raise _Retry(f"{method} {path} answered {response.status_code}")
        self._recovered()
        return response

    def _trouble(self, problem: str) -> None:
        self.connected = False
        if problem != self._problem:  # once per kind of trouble, not once per retry
            log.warning("%s; retrying", problem)
            self._problem = problem

    def _recovered(self) -> None:
        self.connected = True
        if self._problem is not None:
            log.info("reached %s again", self.base)
            self._problem = None


class _Gone(PictguardError):
    """The lease of a download is unknown or has run out."""
