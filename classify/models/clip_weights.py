"""Whether CLIP weights can be present at all, answered without importing torch.

Importing open_clip (and with it torch) takes many seconds; on an install without CLIP
weights that was the whole start-up, only to learn there was nothing to load. This module
looks at the same places :func:`classify.models.clip.resolve_weights` does, using only the
file system: when it finds nothing that could be the weights, the model is skipped at once.
When something could be, the full resolution (with open_clip's tag table) decides.
"""

from __future__ import annotations

from pathlib import Path

from classify.registry import WeightsMissingError
from classify.settings import ClassifySettings, ClipSettings

# The file names open_clip gives the weights in Hugging Face repositories; every pretrained
# tag open_clip ships points at a repository with one of these.
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

HOW_TO_ENABLE = (
    "run `pictguard models --download` once with network access so the weights land in "
    "the Hugging Face cache (HF_HOME, or PICTGUARD_CLASSIFY__CLIP__CACHE_DIR); or set "
    "PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH to a local open_clip weights file; or leave "
    "clip out: PICTGUARD_CLASSIFY__CLASSIFIERS=hashlist,nudenet"
)


def hub_cache(settings: ClipSettings) -> Path:
    """The Hugging Face hub cache folder the weights are looked up in."""
    if settings.cache_dir is not None:
        return settings.cache_dir
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def certainly_missing(classify: ClassifySettings) -> WeightsMissingError | None:
    """The error to report when no CLIP weights can be present; None when they may be.

    The registry's precheck for ``clip`` (see :mod:`classify.registry`).
    """
    settings = classify.clip
    if settings.allow_random_weights:
        return None
    if settings.checkpoint_path is not None:
        if settings.checkpoint_path.is_file():
            return None
        return WeightsMissingError(
            f"CLIP checkpoint {settings.checkpoint_path} does not exist",
            "put the weights file there or fix PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH",
        )
    if settings.pretrained and Path(settings.pretrained).is_file():
        return None
    cache = hub_cache(settings)
    if settings.pretrained and any(
        any(cache.glob(f"models--*/snapshots/*/{name}")) for name in HF_WEIGHT_FILES
    ):
        return None  # some open_clip weights are cached: the full check says whose
    return WeightsMissingError(
        f"no weights for open_clip {settings.model} / {settings.pretrained or '-'} were found "
        f"locally (nothing in {cache})",
        HOW_TO_ENABLE,
    )
