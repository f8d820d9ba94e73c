"""From what the models saw to a decision.

Each model reports the policy categories it considers present (``underage``, ``sexual``,
``nsfw``, ``drawn``, and ``csam``/``nsfw`` from a trained head). The rules, in order:

- ``csam`` present, or ``underage`` AND ``sexual`` → ``flag_csam`` (drawn/anime content
  follows ``policy.drawn_underage_as``, since instances differ on it);
- ``sexual`` or ``nsfw`` present → ``flag_nsfw`` (unless ``policy.flag_nsfw`` is off);
- otherwise ``allow``.

For animations each sampled frame is judged and the worst frame decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from classify.registry import ModelOutput
from classify.settings import PolicySettings
from pipeline.events import Decision

SEVERITY = {Decision.ALLOW: 0, Decision.FLAG_NSFW: 1, Decision.FLAG_CSAM: 2, Decision.ERROR: 3}


@dataclass(slots=True)
class Judgement:
    """A decision with the scores and labels that led to it."""

    decision: Decision
    scores: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    categories: frozenset[str] = frozenset()


class Policy:
    """Combines model outputs into a :class:`Judgement`."""

    def __init__(self, settings: PolicySettings, *, concepts_digest: str = "") -> None:
        self.settings = settings
        # The version changes whenever a threshold or the concept file changes, which
        # invalidates cached verdicts made under the old rules.
        payload = json.dumps(settings.model_dump(mode="json"), sort_keys=True) + concepts_digest
        self.version = "policy@" + hashlib.sha256(payload.encode()).hexdigest()[:12]

    def decide_frame(self, outputs: Iterable[ModelOutput]) -> Judgement:
        """Judge one frame from the outputs of every model that ran on it."""
        scores: dict[str, float] = {}
        labels: list[str] = []
        categories: set[str] = set()
        for output in outputs:
            scores.update(output.scores)
            labels.extend(output.labels)
            categories |= output.categories
        return Judgement(self._decision(categories), scores, labels, frozenset(categories))

    def _decision(self, categories: set[str]) -> Decision:
        sexual = bool(categories & {"sexual"})
        if "csam" in categories or ("underage" in categories and sexual):
            if "drawn" in categories and self.settings.drawn_underage_as == "flag_nsfw":
                return Decision.FLAG_NSFW
            return Decision.FLAG_CSAM
        if categories & {"sexual", "nsfw"} and self.settings.flag_nsfw:
            return Decision.FLAG_NSFW
        return Decision.ALLOW

    @staticmethod
    def worst(frames: Sequence[Judgement]) -> Judgement:
        """The most severe frame's decision; scores are the per-key maximum, labels the union."""
        if not frames:
            return Judgement(Decision.ALLOW)
        worst = max(frames, key=lambda judgement: SEVERITY[judgement.decision])
        scores: dict[str, float] = {}
        labels: list[str] = []
        for frame in frames:
            for key, value in frame.scores.items():
                scores[key] = max(value, scores.get(key, value))
            labels.extend(label for label in frame.labels if label not in labels)
        categories = frozenset().union(*(frame.categories for frame in frames))
        return Judgement(worst.decision, scores, labels, categories)
