"""Validate one upload: fast path from hash lists and the verdict cache, else the sync lane.

Whatever happens — a verdict, a timeout, a broker that is down — :meth:`Validator.validate`
returns an :class:`Outcome` before the deadline. Timeouts and outages follow
``api.on_timeout`` and are logged at most once a minute, not once per request. A flagged
upload is refused only for the decisions in :func:`~validate_api.settings.rejected_decisions`;
the others are accepted and left to enforce, which acts on the stored object once a scan of
storage finds it. Every upload accepted without a real verdict is counted for the admins'
digest (:mod:`validate_api.unverified`).

A fast-path answer is a decision like any other: its verdict goes to the ``verdicts``
topic, so enforce records, audits and notifies it as it does a model verdict of the sync
lane. That publish runs beside the answer (it adds no latency) and :meth:`Validator.drain`
waits for the ones in flight when the API stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from pipeline import mediatype
from pipeline.bus.base import Bus, BusError
from pipeline.events import (
    Decision,
    Findings,
    Lane,
    ScanRequest,
    Source,
    UnverifiedReason,
    Verdict,
    encode,
    new_id,
    utcnow,
)
from pipeline.metrics import (
    record_error,
    record_fast_verdict,
    record_scan_requests,
    record_unverified_accept,
)
from pipeline.policy import ActionPolicy
from pipeline.tracing import inject_headers, span
from validate_api.replies import ReplyRouter
from validate_api.settings import ApiSettings, rejected_decisions
from validate_api.unverified import ClassifierPath, UnverifiedReporter

log = logging.getLogger(__name__)

Path_ = Literal["fast", "model", "timeout", "unavailable", "video", "overload"]
# Paths that are themselves the reason an accept has no verdict; any other is "error".
_NO_VERDICT: tuple[UnverifiedReason, ...] = ("timeout", "unavailable", "video", "overload")

# A fast-path verdict the bus does not take is tried again for this long before it is given
# up (and logged); shutdown waits for the ones in flight for as long.
PUBLISH_PATIENCE_S = 30.0


@dataclass
class Outcome:
    """What to answer: the HTTP status follows from ``accepted`` and the decision."""

    accepted: bool
    decision: Decision | None
    path: Path_
    verdict: dict[str, Any] = field(default_factory=dict)
    unverified: str | None = None  # why the answer is not a real verdict
    elapsed_ms: float = 0.0
    # Where the time went, per step (see :meth:`Validator.validate`); in the answer too.
    timings_ms: dict[str, float] = field(default_factory=dict)

    def body(self, *, full: bool = True) -> dict[str, Any]:
        """The JSON answer. ``full=False`` (pict-rs's endpoint, whose answers pict-rs logs
        and may pass on): a rejection carries the decision, the error reason code and the
        verdict id (for ``pictguard audit``), never which hash or list entry matched.

        A hash-list entry's free-text reason (``detail`` of a matched verdict) is never
        included: it is the admins' note, not the uploader's business.
        """
        body: dict[str, Any] = {
            "accepted": self.accepted,
            "decision": self.decision.value if self.decision else None,
            "path": self.path,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }
        if self.unverified:
            body["unverified"] = self.unverified
        if not self.accepted:
            body["message"] = self.message
        verdict = {k: v for k, v in self.verdict.items() if k not in body}
        if verdict.get("matched"):
            verdict.pop("detail", None)
        if not full and (not self.accepted or self.flagged):
            verdict = {k: verdict[k] for k in ("verdict_id", "reason") if k in verdict}
        body.update(verdict)
        body["timings_ms"] = self.timings_ms
        return body

    @property
    def flagged(self) -> bool:
        return self.decision in (Decision.FLAG_CSAM, Decision.FLAG_NSFW)

    @property
    def unverified_reason(self) -> UnverifiedReason | None:
        """Why there is no real verdict (None: there is one)."""
        if self.unverified is None:
            return None
        for reason in _NO_VERDICT:
            if self.path == reason:
                return reason
        return "error"

    @property
    def message(self) -> str:
        if self.decision in (Decision.FLAG_CSAM, Decision.FLAG_NSFW):
            return f"rejected by pictguard: {self.decision.value}"
        return f"rejected by pictguard: {self.unverified or 'not verified'}"


class FastLookup(Protocol):
    """Answers an upload without a model run when it can (hash lists, verdict cache).

    Classify provides it (``classify.fastpath.FastPath``); the API only asks it.
    """

    @property
    def ready(self) -> bool:
        """Whether it can answer (hash lists loaded)."""
        ...

    def learn(self, verdict: Verdict) -> None:
        """Take note of a model verdict classify sent back (e.g. the model versions)."""
        ...

    async def lookup(self, data: bytes, timings: dict[str, float] | None = None) -> Findings | None:
        """The findings for these bytes if known without a model run, else None; the time
        of each step (sha256, lookup, decode, pdq, match) goes into ``timings``."""
        ...


class _OncePerMinute:
    """Log a recurring problem once a minute with a count, not once per request."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        self._count[key] = self._count.get(key, 0) + 1
        if now - self._last.get(key, -1e9) >= 60:
            log.warning("%s (%d in the last minute)", message, self._count[key])
            self._last[key] = now
            self._count[key] = 0


class Validator:
    def __init__(
        self,
        settings: ApiSettings,
        bus: Bus,
        sync_topic: str,
        router: ReplyRouter,
        fast_path: FastLookup,
        verdicts_topic: str | None = None,
        *,
        policy: ActionPolicy | None = None,
        reporter: UnverifiedReporter | None = None,
    ) -> None:
        self.settings = settings
        # Refused flagged decisions; ``policy`` is enforce's, for the default (see settings).
        self.rejected = rejected_decisions(settings, policy)
        # Counts unverified accepts for enforce's digest (None: counted in metrics only).
        self.reporter = reporter
        self.classifier = ClassifierPath(settings.degraded_after)
        self.bus = bus
        self.sync_topic = sync_topic
        self.router = router
        self.fast_path = fast_path
        # Where fast-path verdicts go for enforce (None: nowhere, for tests of the answer).
        self.verdicts_topic = verdicts_topic
        self._warn = _OncePerMinute()
        self.inflight = 0
        self._publishing: set[asyncio.Task[None]] = set()

    def _policy(self, setting: Literal["accept", "reject"]) -> bool:
        return setting == "accept"

    async def validate(self, data: bytes, content_type: str | None) -> Outcome:
        """The answer for one upload, with the time of each step in ``timings_ms``: the
        fast path's (``sha256``, ``lookup``, ``decode``, ``pdq``, ``match``) and, for a
        model verdict, ``wait`` (publish → verdict), classify's own ``classify`` inside it
        and ``bus`` (the rest of the wait: broker or in-process bus, and queueing)."""
        started = time.perf_counter()
        deadline = started + self.settings.deadline_s
        timings: dict[str, float] = {}
        outcome = await self._validate(data, content_type, deadline, timings)
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        outcome.timings_ms = timings
        self._account(outcome)
        return outcome

    def overloaded(self, why: str | None = None) -> Outcome:
        """The answer above ``api.max_inflight`` (or ``why`` another limit), per
        ``api.on_overload`` (no scan at all), counted like any other."""
        s = self.settings
        why = why or f"more than {s.max_inflight} uploads in flight"
        outcome = Outcome(
            accepted=self._policy(s.on_overload),
            decision=None,
            path="overload",
            unverified=f"{why} (api.on_overload={s.on_overload})",
        )
        self._account(outcome)
        return outcome

    def _account(self, outcome: Outcome) -> None:
        """Note the classifier path's health and an accept without a verdict."""
        if outcome.path == "model":
            self.classifier.verdict()
        elif outcome.path in ("timeout", "unavailable"):
            self.classifier.miss(outcome.path)
        reason = outcome.unverified_reason
        if outcome.accepted and reason is not None and outcome.unverified is not None:
            if self.reporter is not None:
                self.reporter.add(reason, outcome.unverified)
            else:
                record_unverified_accept(reason)

    async def _validate(
        self, data: bytes, content_type: str | None, deadline: float, timings: dict[str, float]
    ) -> Outcome:
        policy = self.settings.video
        if policy != "scan" and mediatype.is_video(kind := mediatype.sniff(data)):
            # What the bytes are, not what the header claims: a PNG sent as video/mp4 is
            # scanned, and an MP4 sent as image/jpeg is a video.
            return Outcome(
                accepted=policy == "accept",
                decision=None,
                path="video",
                unverified=f"{kind} is not scanned (api.video={policy})",
            )
        with span("validate.fast_path"):
            fast = await self.fast_path.lookup(data, timings)
        timings.pop("total", None)
        if fast is not None:
            return self._from_assessment(fast)
        return await self._via_sync_lane(data, content_type, deadline, timings)

    def _from_assessment(self, assessment: Findings) -> Outcome:
        verdict = Verdict(
            request_id=new_id(), lane=Lane.SYNC, source=Source.API, **dict(assessment)
        )
        self._publish(verdict)
        return self._decide(
            assessment.decision, "fast", verdict.model_dump(mode="json", exclude_none=True)
        )

    # -- recording fast-path decisions -------------------------------------------------

    def _publish(self, verdict: Verdict) -> None:
        """Send ``verdict`` to ``verdicts`` beside the answer, not before it."""
        if self.verdicts_topic is None:
            return
        task = asyncio.create_task(self._send(verdict, self.verdicts_topic), name="fast-verdict")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _send(self, verdict: Verdict, topic: str) -> None:
        value, key, headers = encode(verdict), verdict.key.encode(), inject_headers()
        give_up = time.monotonic() + PUBLISH_PATIENCE_S
        delay = 0.25
        while True:
            try:
                await self.bus.produce(topic, value, key, headers)
            except (BusError, OSError) as exc:
                if time.monotonic() + delay > give_up:
                    log.error(
                        "a fast-path %s verdict was not recorded: the bus refused it for "
                        "%.0f s (%s); it is missing from the audit",
                        verdict.decision.value,
                        PUBLISH_PATIENCE_S,
                        exc,
                        extra={"verdict_id": verdict.verdict_id},
                    )
                    record_error("api", "verdict_not_recorded")
                    return
                self._warn.warn("record", f"cannot publish fast-path verdicts yet: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            record_fast_verdict(verdict)
            return

    @property
    def publishing(self) -> int:
        """Fast-path verdicts not yet acknowledged by the bus."""
        return len(self._publishing)

    async def drain(self, timeout_s: float = PUBLISH_PATIENCE_S) -> None:
        """Wait for the fast-path verdicts in flight (at shutdown, before the bus closes)."""
        pending = set(self._publishing)
        if not pending:
            return
        _, left = await asyncio.wait(pending, timeout=timeout_s)
        if left:
            log.error(
                "%d fast-path verdicts were still unacknowledged after %.0f s at shutdown; "
                "they are missing from the audit",
                len(left),
                timeout_s,
            )
            for task in left:
                task.cancel()

    def _decide(self, decision: Decision, path: Path_, verdict: dict[str, Any]) -> Outcome:
        if decision is Decision.ALLOW:
            return Outcome(True, decision, path, verdict)
        if decision is Decision.ERROR:
            reason = verdict.get("reason") or "error"
            return Outcome(
                self._policy(self.settings.on_error),
                decision,
                path,
                verdict,
                unverified=f"could not classify: {reason}",
            )
        # Flagged: refused, or accepted with the decision in the answer (enforce reports it,
        # and acts on the stored object once a scan of storage finds it).
        return Outcome(decision not in self.rejected, decision, path, verdict)

    async def _via_sync_lane(
        self, data: bytes, content_type: str | None, deadline: float, timings: dict[str, float]
    ) -> Outcome:
        request = ScanRequest(
            lane=Lane.SYNC,
            source=Source.API,
            content=data,
            content_type=content_type,
            reply_to=self.router.topic,
            deadline=utcnow() + timedelta(seconds=max(0.0, deadline - time.perf_counter())),
        )
        future = self.router.expect(request.request_id)
        started = time.perf_counter()
        # asyncio.timeout, not wait_for: the await stays in this task instead of going to a
        # new one and back, two trips through a busy event loop on every upload.
        try:
            with span("validate.publish"):
                async with asyncio.timeout(max(0.001, deadline - time.perf_counter())):
                    await self.bus.produce(
                        self.sync_topic,
                        encode(request),
                        request.request_id.encode(),
                        inject_headers(),
                    )
        except (BusError, TimeoutError, OSError) as exc:
            self.router.forget(request.request_id)
            self._warn.warn("unavailable", f"cannot publish sync scan requests: {exc}")
            return self._unverified("unavailable", "the broker is unreachable")
        record_scan_requests(Source.API, Lane.SYNC)
        try:
            async with asyncio.timeout(max(0.001, deadline - time.perf_counter())):
                verdict = await future
        except TimeoutError:
            self._warn.warn(
                "timeout",
                f"no verdict within {self.settings.deadline_s:g} s; answering per "
                f"api.on_timeout={self.settings.on_timeout} — is classify running?",
            )
            return self._unverified("timeout", f"no verdict within {self.settings.deadline_s:g} s")
        finally:
            self.router.forget(request.request_id)
            timings["wait"] = _ms_since(started)
        classified = verdict.timings_ms.get("total")
        if classified is not None:
            timings["classify"] = classified
            timings["bus"] = round(max(0.0, timings["wait"] - classified), 3)
        body = verdict.model_dump(mode="json", exclude_none=True)
        return self._decide(verdict.decision, "model", body)

    def _unverified(self, path: Literal["timeout", "unavailable"], why: str) -> Outcome:
        return Outcome(
            accepted=self._policy(self.settings.on_timeout),
            decision=None,
            path=path,
            unverified=f"{why} (api.on_timeout={self.settings.on_timeout})",
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
