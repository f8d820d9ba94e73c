"""A deterministic test classifier: red-dominant frames are 'sexual', blue 'underage'.

Magenta is therefore flagged CSAM. Registered under its ``name``; a suite that needs one of
its own (another name, no failures) subclasses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classify.preprocess import CenterCrop, Preprocessor
from classify.registry import Model, ModelOutput, register
from classify.settings import ClassifySettings


class ColourModel(Model):
    name = "colour"
    calls = 0  # model calls (batches), per class
    fail_on_green = True  # a green frame raises: a model failure inside a batch

    def __init__(self, settings: ClassifySettings) -> None:
        self.settings = settings

    @property
    def version(self) -> str:
        return f"{self.name}:1"

    @property
    def preprocessor(self) -> Preprocessor:
        return CenterCrop(16)

    def load(self) -> None:
        pass

    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        type(self).calls += 1
        outputs = []
        for array in batch:
            r, g, b = (float(c) for c in array.reshape(-1, 3).mean(axis=0))
            if g > 200 and r < 50 and self.fail_on_green:
                raise ValueError("green breaks this model")
            categories = {c for c, on in (("sexual", r > 200), ("underage", b > 200)) if on}
            outputs.append(
                ModelOutput(
                    {f"{self.name}:red": r / 255}, sorted(categories), frozenset(categories)
                )
            )
        return outputs

    @classmethod
    def register(cls) -> None:
        register(cls.name, cls, lambda s: None)  # type: ignore[arg-type,return-value]


ColourModel.register()
