"""HMA 2.0 (Meta's Hasher-Matcher-Actioner, OpenMediaMatch) as a matcher.

Instances that reach NCMEC, StopNCII or Tech Against Terrorism through an HMA deployment
use those banks here: for each image the engine has decoded, pictguard asks HMA's matcher
role about the image's PDQ (and, where configured, the MD5 of its bytes) with the lookup
API of ``OpenMediaMatch/blueprints/matching.py``::

    GET <url>/m/lookup?signal=<hash>&signal_type=pdq&seed=<sha256>[&banks=A,B]
    → {"BANK_A": [{"bank_content_id": 1001, "distance": "4"}], …}

``signal_type`` given, HMA leaves out the outer level keyed by signal type. It filters the
answer the way its own actioner sees it: content disabled by ``disable_until_ts`` is left
out, and so are banks whose ``matching_enabled_ratio`` is below a coin flip seeded by
``seed`` — the image's sha256 here, so a bank in a partial roll-out answers the same for
the same image every time. ``distance`` is a string (``"-"`` for MD5). Only the hash goes
to HMA, never the image (its ``url`` and upload lookups would need the hasher role and the
bytes). An image whose PDQ quality is below ``classify.pdq_min_quality`` is not asked about
its PDQ: HMA's own hasher gives no PDQ for such images (``PdqSignal``: quality < 50).

Each lookup is bounded by ``classify.hma.timeout_s``. No answer in time, an unreachable
HMA, or an error status (HMA answers 503 ``index not yet ready`` before its first index
build) is an *unavailable* outcome, which the engine never reads as clean
(``classify.hma.on_unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from classify.registry import (
    ClassifierError,
    HashQuery,
    Matcher,
    MatchOutcome,
    WeightsInfo,
)
from classify.settings import ClassifySettings, HmaSettings

log = logging.getLogger(__name__)

# How often "HMA is unavailable" is logged while it stays so (every verdict says it).
_LOG_EVERY_S = 60.0


class HmaAnswerError(ClassifierError):
    """HMA answered a lookup with an error status or a body that is not a lookup answer."""


@dataclass(frozen=True, slots=True)
class _Hit:
    signal_type: str
    bank: str
    content_id: int
    distance: str

    @property
    def rank(self) -> int:
        return 0 if self.distance == "-" else int(self.distance) if self.distance.isdigit() else 999


class HmaMatcher(Matcher):
    """Looks images' hashes up in an HMA 2.0 instance."""

    name = "hma"

    def __init__(
        self, settings: ClassifySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings: HmaSettings = settings.hma
        self.min_quality = settings.pdq_min_quality
        self.wants_md5 = "video_md5" in self.settings.signal_types
        self.on_unavailable = self.settings.on_unavailable
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._down_since: float | None = None
        self._last_log = 0.0

    @property
    def version(self) -> str:
        banks = ",".join(sorted(self.settings.banks)) or "*"
        return f"hma:{self.settings.url}:{banks}:{'+'.join(self.settings.signal_types)}"

    async def start(self) -> None:
        url = self.settings.url
        if not url:
            raise ClassifierError(
                "hma is in classify.classifiers but classify.hma.url is not set "
                "(PICTGUARD_CLASSIFY__HMA__URL=http://hma:5000)"
            )
        headers = {}
        if self.settings.token is not None:
            headers[self.settings.auth_header] = self.settings.token.get_secret_value()
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self.settings.timeout_s),
            transport=self._transport,
        )
        log.info(
            "HMA matcher ready",
            extra={"url": url, "banks": self.settings.banks, "signals": self.settings.signal_types},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def lookup(self, query: HashQuery) -> MatchOutcome:
        signals = self._signals(query)
        if not signals:
            return MatchOutcome()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                answers = await asyncio.gather(
                    *(self._ask(kind, value, query.sha256) for kind, value in signals)
                )
        except TimeoutError:
            return self._unavailable(f"no answer within {self.settings.timeout_s:g} s", "timeout")
        except httpx.HTTPError as exc:
            return self._unavailable(f"unreachable ({type(exc).__name__}: {exc})", "unreachable")
        except HmaAnswerError as exc:
            return self._unavailable(str(exc), "error")
        if self._down_since is not None:
            log.info("HMA answers again after %.0f s", time.monotonic() - self._down_since)
            self._down_since = None
        hits = [hit for answer in answers for hit in answer]
        if not hits:
            return MatchOutcome()
        return self._outcome(hits)

    def _signals(self, query: HashQuery) -> list[tuple[str, str]]:
        signals = []
        usable = query.pdq_quality is not None and query.pdq_quality >= self.min_quality
        if "pdq" in self.settings.signal_types and query.pdq is not None and usable:
            signals.append(("pdq", query.pdq))
        if self.wants_md5 and query.md5 is not None:
            signals.append(("video_md5", query.md5))
        return signals

    async def _ask(self, signal_type: str, signal: str, seed: str) -> list[_Hit]:
        if self._client is None:
            raise ClassifierError("HmaMatcher.lookup() called before start()")
        params = {"signal": signal, "signal_type": signal_type, "seed": seed}
        if self.settings.banks:
            params["banks"] = ",".join(self.settings.banks)
        response = await self._client.get("/m/lookup", params=params)
        if response.status_code != 200:
            raise HmaAnswerError(
                f"HMA answered {response.status_code} to a {signal_type} lookup: "
                f"{_message(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise HmaAnswerError(f"HMA's {signal_type} lookup answer is not a JSON object")
        hits = []
        for bank, matches in body.items():
            for match in matches if isinstance(matches, list) else []:
                if isinstance(match, dict) and "bank_content_id" in match:
                    hits.append(
                        _Hit(
                            signal_type,
                            str(bank),
                            int(match["bank_content_id"]),
                            str(match.get("distance", "")),
                        )
                    )
        return hits

    def _outcome(self, hits: list[_Hit]) -> MatchOutcome:
        categories = self.settings.categories
        default = self.settings.default_category

        def category(hit: _Hit) -> str:
            return categories.get(hit.bank, default)

        # CSAM banks first, then the closest match: what the verdict names.
        best = min(hits, key=lambda h: (category(h) != "csam", h.rank, h.bank, h.content_id))
        how = f"hma:pdq:{best.distance}" if best.signal_type == "pdq" else f"hma:{best.signal_type}"
        banks = tuple(dict.fromkeys(f"hma:bank:{hit.bank}" for hit in hits))
        return MatchOutcome(
            matched=f"{how} (bank: {best.bank}, content: {best.content_id})",
            category="nsfw" if category(best) == "nsfw" else "csam",
            labels=banks,
        )

    def _unavailable(self, why: str, kind: str) -> MatchOutcome:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning(
                "HMA lookup failed: %s — verdicts are %s until it answers",
                why,
                "errors" if self.settings.on_unavailable == "error" else "labelled hma:unavailable",
                extra={"url": self.settings.url, "kind": kind},
            )
        return MatchOutcome(unavailable=f"hma {kind}: {why}", timed_out=kind == "timeout")


def _message(response: httpx.Response) -> str:
    """HMA's ``{"message": …}`` error body, or the start of whatever it sent."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:200]


MATCHER = HmaMatcher


def describe_weights(settings: ClassifySettings) -> WeightsInfo:
    """For ``pictguard models``: HMA needs no weights, only its URL."""
    url = settings.hma.url
    if not url:
        return WeightsInfo(
            "hma",
            "an HMA 2.0 instance (no weights)",
            None,
            False,
            "set classify.hma.url (PICTGUARD_CLASSIFY__HMA__URL) to the HMA matcher's URL",
        )
    return WeightsInfo("hma", "an HMA 2.0 instance (no weights)", url, True)
