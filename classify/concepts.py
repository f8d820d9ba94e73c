"""The CLIP concept policy file: prompts per category with cosine-similarity thresholds.

The file format is documented in ``classify/policies/default.yaml``. Scoring is plain
numpy on the similarity matrix, so it is tested without torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError

from classify.registry import ModelOutput
from pipeline.errors import PictguardError

DRAWN = "drawn"


class ConceptPolicyError(PictguardError, ValueError):
    """The concept policy file is missing or invalid; the message names the file."""


class Concept(BaseModel):
    """One prompt and the similarity at which it fires."""

    prompt: str = Field(min_length=1)
    threshold: float = Field(ge=-1, le=1)
    drawn_threshold: float | None = Field(None, ge=-1, le=1)


class ConceptFile(BaseModel):
    """The whole file."""

    version: int = 1
    categories: dict[str, list[Concept]]


@dataclass(frozen=True, slots=True)
class ConceptPolicy:
    """Parsed concepts in a fixed order (the columns of the similarity matrix)."""

    categories: tuple[str, ...]  # per concept
    concepts: tuple[Concept, ...]
    digest: str
    source: str

    @property
    def prompts(self) -> list[str]:
        return [concept.prompt for concept in self.concepts]

    def score(self, similarities: np.ndarray) -> list[ModelOutput]:
        """``(images, concepts)`` raw cosine similarities → one output per image."""
        thresholds = np.array([c.threshold for c in self.concepts], dtype=np.float32)
        drawn_thresholds = np.array(
            [
                c.threshold if c.drawn_threshold is None else c.drawn_threshold
                for c in self.concepts
            ],
            dtype=np.float32,
        )
        is_drawn = np.array([cat == DRAWN for cat in self.categories])
        outputs = []
        for row in np.asarray(similarities, dtype=np.float32):
            drawn = bool((row[is_drawn] >= thresholds[is_drawn]).any())
            fired = row >= (drawn_thresholds if drawn else thresholds)
            scores: dict[str, float] = {}
            for category, value in zip(self.categories, row.tolist(), strict=True):
                key = f"clip:{category}"
                scores[key] = round(max(value, scores.get(key, -1.0)), 4)
            labels = [
                f"clip:{category}:{concept.prompt}"
                for category, concept, hit in zip(
                    self.categories, self.concepts, fired, strict=True
                )
                if hit
            ]
            categories = frozenset(
                category for category, hit in zip(self.categories, fired, strict=True) if hit
            )
            outputs.append(ModelOutput(scores, labels, categories))
        return outputs


def load_concepts(path: Path | None = None) -> ConceptPolicy:
    """Read a concept policy file; ``None`` reads the default shipped with pictguard."""
    if path is None:
        resource = resources.files("classify") / "policies" / "default.yaml"
        text, source = resource.read_text(encoding="utf-8"), "classify/policies/default.yaml"
    else:
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise ConceptPolicyError(
                f"cannot read CLIP concept policy {path}: {exc} — check "
                "PICTGUARD_CLASSIFY__CLIP__POLICY_PATH"
            ) from exc
    try:
        parsed = ConceptFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConceptPolicyError(f"invalid CLIP concept policy {source}: {exc}") from exc
    categories: list[str] = []
    concepts: list[Concept] = []
    for category, items in parsed.categories.items():
        for concept in items:
            categories.append(category)
            concepts.append(concept)
    if not concepts:
        raise ConceptPolicyError(f"CLIP concept policy {source} lists no concepts")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return ConceptPolicy(tuple(categories), tuple(concepts), digest, source)
