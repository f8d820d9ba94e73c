"""Model input preparation that runs in the decode pool, not in the model thread.

Preprocessors turn a decoded RGB frame into a uint8 ``H×W×3`` array of the model's input
size. They stay uint8 on purpose: a quarter of the bytes of float32 to move between
processes and to the GPU, where scaling and normalisation happen in one fused step.
They are frozen dataclasses so a process pool can pickle them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image

Side = Literal["short", "long"]


class Preprocessor(Protocol):
    """PIL RGB image → uint8 ``size×size×3`` array.

    ``side`` says which side of the frame must keep at least ``size`` pixels for the
    input to lose nothing: the decoder shrinks frames (JPEG DCT scaling, ``reduce``) no
    further than every preprocessor allows.
    """

    @property
    def size(self) -> int: ...

    @property
    def side(self) -> Side: ...

    def __call__(self, image: Image.Image) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class CenterCrop:
    """CLIP's preprocessing: bicubic resize of the short side to ``size``, centre crop."""

    size: int

    @property
    def side(self) -> Side:
        return "short"  # the centre square of the short side is what gets resized

    def __call__(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        # Resampling only the centre square (``box``) equals resize-then-crop, for less work.
        resized = image.resize(
            (self.size, self.size),
            Image.Resampling.BICUBIC,
            box=(left, top, left + side, top + side),
        )
        return np.asarray(resized, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """NudeNet's preprocessing: pad right/bottom to a square with black, resize to ``size``.

    NudeNet's own reader pads the same way, so its detection thresholds carry over.
    """

    size: int

    @property
    def side(self) -> Side:
        return "long"  # the long side becomes ``size``

    def __call__(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        scale = self.size / max(width, height)
        # Resize the image, then pad: the same result as padding first, on fewer pixels.
        fitted = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            Image.Resampling.BILINEAR,
        )
        canvas = Image.new("RGB", (self.size, self.size))
        canvas.paste(fitted, (0, 0))
        return np.asarray(canvas, dtype=np.uint8)
