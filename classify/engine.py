"""The classification engine: bytes in, :class:`~classify.base.Assessment` out.

Per image, cheapest first: sha256 (with MD5 and SHA-1 in the same pass when a list entry
has them) → exact allow/block entry → verdict cache → an identical image already in flight
→ decode + PDQ (pool) → PDQ-near allow/block entry → every loaded model, through its
dynamic batcher, while the matchers (HMA) are asked → policy → verdict cache. The stage calls
:meth:`ClassifyEngine.evaluate` for many images at once; batching happens underneath.

Videos and animations take the same path with several frames: every sampled frame's PDQ
is matched (one near a blocklisted PDQ flags the file), every frame goes through the
same model batchers, the worst frame decides, and the verdict's ``media`` names the
frames that flagged. With a deadline (an upload that pict-rs waits for) fewer frames are
sampled when the time left would not cover them all, and ``media.limited`` says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from classify.base import Assessment, ClassifyTables
from classify.batcher import DynamicBatcher
from classify.cache import VerdictCache
from classify.decode import DecodeFailure, DecodeOptions, DecodePool, Prepared, VideoLimits
from classify.hashing import ContentHashes, content_hashes, sha256_hex
from classify.hashlists import HashLists, HashMatch
from classify.policy import SEVERITY, Judgement, Policy
from classify.registry import (
    HASHLIST,
    ClassifierError,
    HashQuery,
    Matcher,
    MatchOutcome,
    Model,
    ModelOutput,
    WeightsMissingError,
    create_matcher,
    is_matcher,
)
from classify.registry import create as create_model
from classify.settings import ClassifySettings
from pipeline import mediatype
from pipeline.errors import PictguardError
from pipeline.events import (
    Decision,
    ErrorReason,
    FrameRef,
    Lane,
    MediaSummary,
    utcnow,
)
from pipeline.tracing import span

log = logging.getLogger(__name__)

# Inputs above this are hashed off the loop: sha256 of 50 MB takes ~100 ms.
_INLINE_HASH_BYTES = 1 << 20
# PDQ indexes above this are searched off the loop, many images per search (a query costs
# ~0.15 ms at 1M entries with the multi-index; batched off the loop they cost less each and
# never hold up the event loop while the index rebuilds).
_INLINE_PDQ_ENTRIES = 20_000
# With a deadline, the shares of the time left that decoding a video or an animation and
# running its frames through the models may take (the rest covers the queues and the
# answer's way back).
_DECODE_SHARE = 0.4
_MODEL_SHARE = 0.4
# Weight of the newest measurement in the running average of model time per frame.
_COST_WEIGHT = 0.2
# A cached verdict made this long after the hash lists last changed here was made against
# lists that already held every entry this process holds, so its PDQ need not be checked
# against them again. Verdicts of this engine's own versions: the time for another process
# on the same state (``pictguard scan``) to follow the lists; verdicts of classify
# processes elsewhere: the lists reaching them, and their clocks' drift.
_LOCAL_SETTLE_S = 10.0
_REMOTE_SETTLE_S = 300.0


class EngineNotReadyError(PictguardError, RuntimeError):
    """``evaluate`` was called before ``start`` finished."""


class ClassifyEngine:
    """Decodes, hashes, matches hash lists, consults the verdict cache and runs models."""

    def __init__(self, settings: ClassifySettings, tables: ClassifyTables) -> None:
        self.settings = settings
        self.tables = tables
        self.hashlists = HashLists(
            tables.hashlists,
            pdq_max_distance=settings.pdq_max_distance,
            pdq_min_quality=settings.pdq_min_quality,
        )
        self.cache = VerdictCache(tables.verdict_cache)
        self.pool = DecodePool(settings.decode_workers, settings.decode_pool)
        self.models: list[Model] = []
        self.matchers: list[Matcher] = []
        self.batchers: dict[str, DynamicBatcher[object, ModelOutput]] = {}
        self.missing: dict[str, str] = {}
        self.policy = Policy(settings.policy)
        self.model_version = ""
        self.policy_version = self.policy.version
        self.use_hashlists = HASHLIST in settings.classifiers
        self._decode_options = DecodeOptions()
        self._hash_options = DecodeOptions()
        self._inflight: dict[str, tuple[Lane, asyncio.Future[Assessment]]] = {}
        self._pdq_batcher: DynamicBatcher[tuple[str | None, int | None], HashMatch | None] = (
            DynamicBatcher(self.hashlists.match_pdq_many, max_batch=256, max_wait_ms=1, name="pdq")
        )
        # Model time per frame, averaged over recent runs (None before the first): how
        # many frames of a video fit before a deadline.
        self.frame_cost_ms: float | None = None
        # When the hash lists last changed in this process (wall clock, like verdicts' times).
        self._lists_changed_at = time.time()
        self._ready = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load hash lists and models; a model whose weights are missing is skipped."""
        if self._ready:
            return
        self.pool.start()
        await self.tables.verdict_cache.start()
        if self.use_hashlists:
            self.tables.hashlists.subscribe(self._lists_changed)
            await self.hashlists.start()
            await self._pdq_batcher.start()
            self._lists_changed_at = time.time()
        else:
            log.warning("hash lists are disabled: 'hashlist' is not in classify.classifiers")
        for name in dict.fromkeys(self.settings.classifiers):
            if name == HASHLIST:
                continue
            if is_matcher(name):
                matcher = create_matcher(name, self.settings)
                await matcher.start()
                self.matchers.append(matcher)
                continue
            model = create_model(name, self.settings)
            try:
                await asyncio.to_thread(model.load)
            except WeightsMissingError as exc:
                self.missing[name] = str(exc)
                # Logged once per start, not per image: the admin needs to read it once.
                log.warning(
                    "%s%s is disabled: %s — to enable it: %s",
                    "CSAM detection needs the CLIP model; " if name == "clip" else "",
                    name,
                    exc,
                    exc.how_to_enable,
                    extra={"classifier": name},
                )
                continue
            self.models.append(model)
            batcher: DynamicBatcher[object, ModelOutput] = DynamicBatcher(
                model.predict,  # type: ignore[arg-type]
                max_batch=self.settings.max_batch,
                max_wait_ms=self.settings.max_wait_ms,
                name=f"model-{name}",
            )
            await batcher.start()
            self.batchers[name] = batcher
        digest = "".join(getattr(model, "policy_digest", "") for model in self.models)
        self.policy = Policy(self.settings.policy, concepts_digest=digest)
        self.policy_version = self.policy.version
        self.model_version = "+".join(model.version for model in self.models) or "none"
        self._hash_options = DecodeOptions(
            max_pixels=self.settings.max_pixels,
            max_frames=1,
            hash_size=self.settings.hash_size,
            time_limit_s=self.settings.video_max_decode_s,
            video=VideoLimits(
                max_pixels=self.settings.video_max_pixels,
                max_duration_s=self.settings.video_max_duration_s,
                max_memory_mb=self.settings.video_max_memory_mb,
                threads=self.settings.video_threads,
            ),
        )
        preprocessors = tuple(model.preprocessor for model in self.models)
        self._decode_options = replace(
            self._hash_options,
            max_frames=self.settings.max_frames,
            draft_size=max([self._hash_options.draft_size, *(p.size for p in preprocessors)]),
            preprocessors=preprocessors,
        )
        self._ready = True
        log.info(
            "classify engine ready",
            extra={
                "classifiers": self._classifier_names(),
                "model_version": self.model_version,
                "policy_version": self.policy_version,
            },
        )

    def _lists_changed(self, key: str, value: bytes | None) -> None:
        self._lists_changed_at = time.time()

    async def stop(self) -> None:
        """Stop batchers, the decode pool and the models."""
        self._ready = False
        await self.cache.drain()
        await self._pdq_batcher.stop()
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers.clear()
        for model in self.models:
            model.close()
        self.models.clear()
        for matcher in self.matchers:
            await matcher.close()
        self.matchers.clear()
        await asyncio.to_thread(self.pool.stop)

    @property
    def ready(self) -> bool:
        """True between a completed :meth:`start` and :meth:`stop`."""
        return self._ready

    @property
    def classifiers_loaded(self) -> list[str]:
        """The classifiers that actually run, in order (a model without weights is absent)."""
        return self._classifier_names()

    def _classifier_names(self) -> list[str]:
        names = [HASHLIST] if self.use_hashlists else []
        return names + [model.name for model in self.models] + [m.name for m in self.matchers]

    # -- evaluation --------------------------------------------------------------------

    async def evaluate(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        lane: Lane = Lane.BULK,
        deadline: datetime | None = None,
    ) -> Assessment:
        """The assessment of one image, animation or video. Bad input gives
        ``Decision.ERROR``, never an exception.

        The type is read from the bytes; a ``content_type`` that disagrees is noted in the
        verdict's ``detail``. ``deadline``: when the answer is due (the sync lane); a video
        is then sampled to fit.
        """
        if not self._ready:
            raise EngineNotReadyError("ClassifyEngine.evaluate() called before start()")
        started = time.perf_counter()
        try:
            assessment = await self._evaluate(data, lane, deadline)
        except ClassifierError as exc:
            assessment = self._error(ErrorReason.MODEL_FAILED, str(exc))
        note = mediatype.mismatch(content_type, mediatype.sniff(data)) if data else None
        if note is not None:
            # A copy: the object may be shared with requests for the same bytes.
            detail = f"{assessment.detail}; {note}" if assessment.detail else note
            assessment = assessment.model_copy(update={"detail": detail})
        assessment.timings_ms["total"] = _ms_since(started)
        return assessment

    async def lookup_fast(
        self,
        data: bytes,
        *,
        pdq: bool = True,
        cache: bool = True,
        versions: tuple[str, str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Assessment | None:
        """Answer from hash lists and the verdict cache only; None when a model must run.

        ``pdq``: also decode for PDQ, so a re-encoded blocklisted image is caught here and
        an undecodable upload gets its error at once; off when the miss is evaluated by
        this same engine, which checks PDQ before any model anyway (one decode, not two).
        ``versions``: read the verdict cache under these (model, policy) versions instead
        of this engine's own — the versions of the classify processes that fill it;
        ``cache=False``: do not read it at all. ``timings`` receives the time of each step
        (sha256, lookup, decode, pdq, match), a miss included.
        """
        if not self._ready:
            raise EngineNotReadyError("ClassifyEngine.lookup_fast() called before start()")
        started = time.perf_counter()
        timings = {} if timings is None else timings
        early = await self._before_decode(data, timings, versions, cache=cache)
        if isinstance(early, Assessment):
            early.timings_ms.update(timings, total=_ms_since(started))
            return early
        sha256 = early
        if mediatype.is_video(mediatype.sniff(data)):
            return None  # its frames are sampled and matched on the model path, not twice
        if pdq and self.use_hashlists and self.hashlists.has_pdq_entries:
            prepared = await self._decode(data, self._hash_options, timings)
            if isinstance(prepared, DecodeFailure):
                result = self._error(prepared.reason, prepared.detail, sha256)
            else:
                result = await self._match_pdq(sha256, prepared, Lane.SYNC, timings)  # type: ignore[assignment]
            if result is not None:
                result.timings_ms.update(timings, total=_ms_since(started))
                return result
        return None

    async def _before_decode(
        self,
        data: bytes,
        timings: dict[str, float],
        versions: tuple[str, str] | None = None,
        *,
        cache: bool = True,
    ) -> Assessment | str:
        """Size checks, sha256, exact hash-list entry, verdict cache; else the sha256."""
        with span("classify.hash", attributes={"pictguard.bytes": len(data)}) as current:
            result = await self._hash_and_look_up(data, timings, versions, cache)
            if isinstance(result, Assessment):
                current.set_attribute("pictguard.decision", result.decision.value)
                current.set_attribute("pictguard.cached", result.cached)
                if result.matched:
                    current.set_attribute("pictguard.matched", result.matched)
            return result

    async def _hash_and_look_up(
        self,
        data: bytes,
        timings: dict[str, float],
        versions: tuple[str, str] | None,
        cache: bool,
    ) -> Assessment | str:
        if not data:
            return self._error(ErrorReason.EMPTY, "0 bytes", sha256_hex(b""))
        if len(data) > self.settings.max_object_bytes:
            return self._error(
                ErrorReason.OBJECT_TOO_BIG,
                f"{len(data)} bytes exceeds {self.settings.max_object_bytes}",
            )
        # MD5 and SHA-1 cost about twice what sha256 does: only when some entry has one.
        digest = content_hashes if self.use_hashlists and self.hashlists.wants_md5_sha1 else None
        hashed: ContentHashes | str
        started = time.perf_counter()
        if len(data) > _INLINE_HASH_BYTES:
            # hashlib releases the GIL: a thread is enough, and no bytes cross processes.
            hashed = await asyncio.to_thread(digest or sha256_hex, data)
        else:
            hashed = (digest or sha256_hex)(data)
        if isinstance(hashed, ContentHashes):
            sha256, md5, sha1 = hashed.sha256, hashed.md5, hashed.sha1
        else:
            sha256, md5, sha1 = hashed, None, None
        looked_up = time.perf_counter()
        timings["sha256"] = _ms(looked_up - started)
        try:
            if (
                self.use_hashlists
                and (match := self.hashlists.match_exact(sha256, md5, sha1)) is not None
            ):
                return self._from_match(match, sha256, None, None)
            settle = _REMOTE_SETTLE_S
            if versions is None and self.settings.verdict_cache:
                versions, settle = (self.model_version, self.policy_version), _LOCAL_SETTLE_S
            if cache and versions is not None:
                found = await self.cache.get_dated(sha256, *versions)
                if found is not None:
                    cached, made = found
                    if made.timestamp() > self._lists_changed_at + settle:
                        return cached
                    # A PDQ-near list entry added since the verdict was made still wins:
                    # the cached PDQ is checked against the lists, no decode needed.
                    return await self._recheck(cached) or cached
            return sha256
        finally:
            timings["lookup"] = _ms_since(looked_up)

    async def _recheck(self, cached: Assessment) -> Assessment | None:
        """A PDQ-near list entry for a cached verdict's image, if the lists have one now."""
        if not self.use_hashlists or cached.sha256 is None:
            return None
        match = await self._search_pdq((cached.pdq, cached.pdq_quality), Lane.SYNC)
        if match is None:
            return None
        return self._from_match(match, cached.sha256, cached.pdq, cached.pdq_quality)

    async def _evaluate(self, data: bytes, lane: Lane, deadline: datetime | None) -> Assessment:
        timings: dict[str, float] = {}
        early = await self._before_decode(data, timings)
        if isinstance(early, Assessment):
            early.timings_ms.update(timings)
            return early
        sha256 = early
        running = self._inflight.get(sha256)
        # The same content is being classified right now (federated duplicates often arrive
        # together): share that run instead of paying for another — unless it waits in the
        # bulk lane and this request is a sync one.
        if running is not None and (running[0] is Lane.SYNC or lane is Lane.BULK):
            try:
                shared = await asyncio.shield(running[1])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this request was cancelled
                # The run we shared was cancelled, not us: classify on our own below.
            else:
                if not (lane is Lane.BULK and shared.media and shared.media.limited):
                    return shared.model_copy(update={"cached": True, "timings_ms": {}}, deep=True)
                # A sampling cut short for an upload's deadline: the bulk scan does it fully.
        future: asyncio.Future[Assessment] = asyncio.get_running_loop().create_future()
        self._inflight[sha256] = (lane, future)
        try:
            result = await self._classify(data, sha256, lane, deadline, timings)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without sharers
            raise
        else:
            future.set_result(result)
        finally:
            if self._inflight.get(sha256, (None, None))[1] is future:
                del self._inflight[sha256]
        return result

    async def _classify(
        self,
        data: bytes,
        sha256: str,
        lane: Lane,
        deadline: datetime | None,
        timings: dict[str, float],
    ) -> Assessment:
        options, cut = self._options_for(deadline)
        with span("classify.decode") as current:
            prepared = await self._decode(data, options, timings)
            if isinstance(prepared, DecodeFailure):
                current.set_attribute("pictguard.error", prepared.reason.value)
            else:
                current.set_attribute("pictguard.frames", len(prepared.inputs))
        if isinstance(prepared, DecodeFailure):
            failed = self._error(prepared.reason, prepared.detail, sha256)
            failed.timings_ms.update(timings)
            return failed
        if cut is not None and prepared.multi_frame and len(prepared.inputs) < prepared.n_frames:
            prepared.limited = "; ".join(filter(None, (cut, prepared.limited)))
        matched = await self._match_pdq(sha256, prepared, lane, timings)
        if matched is not None:
            matched.timings_ms.update(timings)
            return matched
        # The matchers answer over the network while the models run.
        asking = (
            asyncio.ensure_future(self._ask_matchers(data, sha256, prepared, timings))
            if self.matchers
            else None
        )
        try:
            judgement: Judgement | ClassifierError = Judgement(Decision.ALLOW)
            flagged: dict[int, tuple[Decision, str | None]] = {}
            if self.models:
                started = time.perf_counter()
                try:
                    per_model = await self._run_models(prepared, lane, timings)
                except ClassifierError as exc:
                    judgement = exc
                else:
                    self._note_frame_cost(
                        (time.perf_counter() - started) * 1000 / len(prepared.inputs)
                    )
                    judgement, flagged = self._judge(per_model, prepared)
            outcomes = await asking if asking is not None else []
        finally:
            if asking is not None and not asking.done():
                asking.cancel()
        if isinstance(judgement, ClassifierError):
            found = next((o for o in outcomes if o.matched), None)
            if found is None:
                return self._error(ErrorReason.MODEL_FAILED, str(judgement), sha256)
            judgement = Judgement(Decision.ALLOW)
        assessment = self._assessment(judgement, sha256, prepared, timings, flagged)
        if outcomes:
            return await self._with_outcomes(assessment, outcomes)
        if self._cacheable(assessment):
            # Without models too: a hash-list-only verdict is cached under model version
            # "none", so the same image again costs its sha256 and a lookup, not a decode.
            self.cache.remember(assessment)
        return assessment

    def _cacheable(self, assessment: Assessment) -> bool:
        """Not a sample cut short by a clock (a full scan may see more)."""
        limited = assessment.media is not None and assessment.media.limited is not None
        return self.settings.verdict_cache and not limited

    def _judge(
        self, per_model: list[list[ModelOutput]], prepared: Prepared
    ) -> tuple[Judgement, dict[int, tuple[Decision, str | None]]]:
        """The worst frame's judgement, and the frames that flagged (by position)."""
        with span(
            "classify.policy", attributes={"pictguard.policy": self.policy_version}
        ) as current:
            frames = [
                self.policy.decide_frame(outputs[frame] for outputs in per_model)
                for frame in range(len(prepared.inputs))
            ]
            judgement = Policy.worst(frames)
            current.set_attribute("pictguard.decision", judgement.decision.value)
        flagged: dict[int, tuple[Decision, str | None]] = {
            i: (frame.decision, None)
            for i, frame in enumerate(frames)
            if frame.decision in (Decision.FLAG_CSAM, Decision.FLAG_NSFW)
        }
        return judgement, flagged

    async def _ask_matchers(
        self, data: bytes, sha256: str, prepared: Prepared, timings: dict[str, float]
    ) -> list[MatchOutcome]:
        started = time.perf_counter()
        md5 = None
        if any(m.wants_md5 for m in self.matchers):
            md5 = await asyncio.to_thread(_md5_hex, data)
        query = HashQuery(sha256, md5, prepared.pdq, prepared.pdq_quality)
        with span("classify.match"):
            answers = await asyncio.gather(
                *(m.lookup(query) for m in self.matchers), return_exceptions=True
            )
        timings["matchers"] = _ms_since(started)
        outcomes = []
        for matcher, answer in zip(self.matchers, answers, strict=True):
            if isinstance(answer, asyncio.CancelledError):
                raise answer
            if isinstance(answer, BaseException):
                log.warning("%s lookup failed", matcher.name, extra={"error": repr(answer)})
                answer = MatchOutcome(unavailable=f"{matcher.name} failed: {answer!r}")
            outcomes.append(answer)
        return outcomes

    async def _with_outcomes(
        self, assessment: Assessment, outcomes: list[MatchOutcome]
    ) -> Assessment:
        """The assessment with what the matchers said: a match flags the image (hash
        evidence, never cached); no answer is recorded, and never read as clean."""
        found = [o for o in outcomes if o.matched]
        for outcome in found:
            decision = Decision.FLAG_NSFW if outcome.category == "nsfw" else Decision.FLAG_CSAM
            if SEVERITY[decision] > SEVERITY[assessment.decision]:
                assessment.decision = decision
            assessment.labels += [
                label for label in outcome.labels if label not in assessment.labels
            ]
        if found:
            assessment.matched = found[0].matched
            return assessment
        down = [(m, o) for m, o in zip(self.matchers, outcomes, strict=True) if o.unavailable]
        if not down:
            if self._cacheable(assessment) and self.models:
                self.cache.remember(assessment)
            return assessment
        why = "; ".join(o.unavailable or "" for _, o in down)
        if assessment.decision is Decision.ALLOW and any(
            m.on_unavailable == "error" for m, _ in down
        ):
            timed_out = all(o.timed_out for _, o in down)
            reason = ErrorReason.TIMEOUT if timed_out else ErrorReason.MODEL_FAILED
            return self._error(reason, why, assessment.sha256)
        assessment.labels += [f"{m.name}:unavailable" for m, _ in down]
        assessment.detail = why
        return assessment

    def _options_for(self, deadline: datetime | None) -> tuple[DecodeOptions, str | None]:
        """Decode options that fit the time left before ``deadline``, and a note when they
        sample fewer frames than ``classify.max_frames``."""
        if deadline is None:
            return self._decode_options, None
        left = max(0.0, (deadline - utcnow()).total_seconds())
        options = self._decode_options
        frames = options.max_frames
        if self.frame_cost_ms:
            frames = max(1, min(frames, int(left * 1000 * _MODEL_SHARE / self.frame_cost_ms)))
        limit = max(0.05, min(options.time_limit_s, left * _DECODE_SHARE))
        cut = None
        if frames < options.max_frames:
            cut = f"sync deadline: {frames} of {options.max_frames} frames sampled"
        return replace(options, max_frames=frames, time_limit_s=limit), cut

    def _note_frame_cost(self, ms: float) -> None:
        previous = self.frame_cost_ms
        self.frame_cost_ms = ms if previous is None else previous + _COST_WEIGHT * (ms - previous)

    async def _decode(
        self, data: bytes, options: DecodeOptions, timings: dict[str, float]
    ) -> Prepared | DecodeFailure:
        """Decode in the pool. Timings: ``decode`` (the worker's own time, PDQ hash
        excluded), ``pdq`` (the PDQ hash), ``pool`` (waiting for a worker and back)."""
        started = time.perf_counter()
        prepared = await self.pool.prepare(data, options)
        took = _ms_since(started)
        if isinstance(prepared, Prepared):
            timings["decode"] = round(prepared.decode_ms - prepared.pdq_ms, 3)
            timings["pdq"] = round(prepared.pdq_ms, 3)
            timings["pool"] = round(max(0.0, took - prepared.decode_ms), 3)
        else:
            timings["decode"] = took
        return prepared

    async def _run_models(
        self, prepared: Prepared, lane: Lane, timings: dict[str, float]
    ) -> list[list[ModelOutput]]:
        """Every model's outputs, per frame, through the models' batchers."""

        async def run(index: int, model: Model) -> list[ModelOutput]:
            started = time.perf_counter()
            batcher = self.batchers[model.name]
            # The batch that runs this image links to this span (and this span back to it).
            with span("classify.model", attributes={"pictguard.model": model.version}):
                outputs = await asyncio.gather(
                    *(batcher.submit(frame[index], lane) for frame in prepared.inputs)
                )
            timings[f"model:{model.name}"] = _ms_since(started)
            return list(outputs)

        try:
            per_model = await asyncio.gather(
                *(run(index, model) for index, model in enumerate(self.models))
            )
        except Exception as exc:
            log.warning("model call failed", extra={"error": repr(exc)})
            raise ClassifierError(f"model failed: {exc!r}") from exc
        return per_model

    async def _match_pdq(
        self, sha256: str, prepared: Prepared, lane: Lane, timings: dict[str, float]
    ) -> Assessment | None:
        """The hash-list verdict from the frames' PDQs, or None to go on to the models.

        One frame near a blocklisted PDQ flags a video or an animation; an allowlist
        match allows it only when every sampled frame matches one (a shared intro must
        not clear the rest). A still image has one frame: its nearest entry decides.
        """
        if not self.use_hashlists or not self.hashlists.has_pdq_entries:
            return None
        queries = [(f.pdq, f.pdq_quality) for f in prepared.frames] or [
            (prepared.pdq, prepared.pdq_quality)
        ]
        started = time.perf_counter()
        if self.hashlists.pdq_entries < _INLINE_PDQ_ENTRIES:
            matches = self.hashlists.match_pdq_many(queries)
        else:
            matches = list(
                await asyncio.gather(*(self._pdq_batcher.submit(q, lane) for q in queries))
            )
        timings["match"] = _ms_since(started)
        blocked = [
            (i, m) for i, m in enumerate(matches) if m is not None and m.entry.list != "allow"
        ]
        flagged: dict[int, tuple[Decision, str | None]] = {}
        if blocked:
            # CSAM entries before nsfw ones, then the first frame.
            i, match = min(blocked, key=lambda im: (im[1].entry.category == "nsfw", im[0]))
            decision = self._decision_of(match)
            for j, other in blocked:
                if self._decision_of(other) is decision:
                    flagged[j] = (decision, other.label)
        else:
            allowed = [m for m in matches if m is not None]
            if not allowed or len(allowed) < len(matches) or not self._complete(prepared):
                return None
            i, match = 0, allowed[0]
        pdq, quality = queries[i]
        result = self._from_match(match, sha256, pdq, quality)
        result.media = self._media(prepared, flagged)
        return result

    def _complete(self, prepared: Prepared) -> bool:
        """Whether ``prepared`` holds every frame a full scan samples (the fast path's
        first frame of an animation, or a sample cut short, does not)."""
        if not prepared.multi_frame:
            return True
        wanted = min(prepared.n_frames, self.settings.max_frames)
        return prepared.limited is None and len(prepared.frames) >= wanted

    async def _search_pdq(
        self, query: tuple[str | None, int | None], lane: Lane
    ) -> HashMatch | None:
        if not self.hashlists.has_pdq_entries or query[0] is None:
            return None
        if self.hashlists.pdq_entries < _INLINE_PDQ_ENTRIES:
            return self.hashlists.match_pdq(*query)
        return await self._pdq_batcher.submit(query, lane)

    # -- building assessments ----------------------------------------------------------

    @staticmethod
    def _decision_of(match: HashMatch) -> Decision:
        entry = match.entry
        if entry.list == "allow":
            return Decision.ALLOW
        return Decision.FLAG_NSFW if entry.category == "nsfw" else Decision.FLAG_CSAM

    def _from_match(
        self, match: HashMatch, sha256: str, pdq: str | None, quality: int | None
    ) -> Assessment:
        entry = match.entry
        return Assessment(
            decision=self._decision_of(match),
            sha256=sha256,
            pdq=pdq or entry.pdq,
            pdq_quality=quality if pdq else entry.pdq_quality,
            matched=match.label,
            detail=entry.reason or None,
            classifiers=[HASHLIST],
            model_version=self.model_version,
            policy_version=self.policy_version,
        )

    def _assessment(
        self,
        judgement: Judgement,
        sha256: str,
        prepared: Prepared,
        timings: dict[str, float],
        flagged: Mapping[int, tuple[Decision, str | None]] | None = None,
    ) -> Assessment:
        return Assessment(
            decision=judgement.decision,
            sha256=sha256,
            pdq=prepared.pdq,
            pdq_quality=prepared.pdq_quality,
            scores=judgement.scores,
            labels=judgement.labels,
            classifiers=self._classifier_names(),
            model_version=self.model_version,
            policy_version=self.policy_version,
            timings_ms=dict(timings),
            media=self._media(prepared, flagged or {}),
        )

    @staticmethod
    def _media(
        prepared: Prepared, flagged: Mapping[int, tuple[Decision, str | None]]
    ) -> MediaSummary | None:
        """The verdict's account of a video's or an animation's frames (None for a still).

        ``flagged`` maps a position in ``prepared.frames`` to the decision it got and the
        hash-list entry it matched.
        """
        if not prepared.multi_frame:
            return None
        frames = prepared.frames
        return MediaSummary(
            type=prepared.media_type,
            frames=prepared.n_frames,
            duration_s=prepared.duration_s,
            sampled=[
                FrameRef(index=f.index, time_s=f.time_s, pdq=f.pdq, pdq_quality=f.pdq_quality)
                for f in frames
            ],
            flagged=[
                FrameRef(
                    index=frames[i].index,
                    time_s=frames[i].time_s,
                    decision=decision,
                    matched=matched,
                )
                for i, (decision, matched) in sorted(flagged.items())
            ],
            limited=prepared.limited,
        )

    def _error(self, reason: ErrorReason, detail: str, sha256: str | None = None) -> Assessment:
        return Assessment(
            decision=Decision.ERROR,
            reason=reason,
            detail=detail,
            sha256=sha256,
            classifiers=self._classifier_names(),
            model_version=self.model_version,
            policy_version=self.policy_version,
        )


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _ms_since(started: float) -> float:
    return _ms(time.perf_counter() - started)
