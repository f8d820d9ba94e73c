"""open_clip zero-shot concept scoring: one image embedding per image, prompts embedded once.

Weights (see :class:`classify.settings.ClipSettings`): a local checkpoint file, else the
open_clip ``pretrained`` tag found in the Hugging Face cache (never downloaded at start),
else random weights where explicitly allowed (tests, benchmarks). Without weights,
:meth:`ClipModel.load` raises :class:`WeightsMissingError` and the engine runs without CLIP.

Throughput on a GPU: inputs arrive as uint8 (4× less to copy than float), are pinned and
copied asynchronously, converted and normalised on the device, laid out channels_last, and
run under ``torch.inference_mode`` with fp16 autocast.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from torch import nn

from classify.concepts import ConceptPolicy, load_concepts
from classify.preprocess import CenterCrop, Preprocessor
from classify.registry import ClassifierError, Model, ModelOutput, WeightsInfo, WeightsMissingError
from classify.settings import ClassifySettings, ClipSettings

log = logging.getLogger(__name__)

_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True, slots=True)
class ResolvedWeights:
    """Where the weights were found: a file, or random initialisation."""

    path: Path | None
    source: str
    tag_cfg: dict[str, Any]

    @property
    def random(self) -> bool:
        return self.path is None


def _register_configs(settings: ClipSettings) -> None:
    if settings.model_config_path is not None:
        if not settings.model_config_path.exists():
            raise ClassifierError(
                f"open_clip model config {settings.model_config_path} not found — check "
                "PICTGUARD_CLASSIFY__CLIP__MODEL_CONFIG_PATH"
            )
        open_clip.add_model_config(settings.model_config_path)


def _tag_cfg(settings: ClipSettings) -> dict[str, Any]:
    if not settings.pretrained:
        return {}
    cfg: dict[str, Any] = open_clip.get_pretrained_cfg(settings.model, settings.pretrained)
    return cfg


def _find_in_hf_cache(cfg: dict[str, Any], cache_dir: Path | None) -> Path | None:
    hub = str(cfg.get("hf_hub", ""))
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one file.
    repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
    candidates = (filename,) if filename else _HF_FILENAMES
    for name in candidates:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def hf_repo(settings: ClipSettings) -> str | None:
    """The Hugging Face repository holding the ``pretrained`` tag's weights, if any."""
    hub = str(_tag_cfg(settings).get("hf_hub", ""))
    if not hub:
        return None
    return hub.rstrip("/") if hub.endswith("/") else os.path.split(hub)[0]


def resolve_weights(settings: ClipSettings) -> ResolvedWeights:
    """Find the weights locally, without any download; raise if there are none."""
    _register_configs(settings)
    cfg = _tag_cfg(settings)
    if settings.checkpoint_path is not None:
        if not settings.checkpoint_path.is_file():
            raise WeightsMissingError(
                f"CLIP checkpoint {settings.checkpoint_path} does not exist",
                "put the weights file there or fix PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH",
            )
        return ResolvedWeights(settings.checkpoint_path, "checkpoint_path", cfg)
    if settings.pretrained:
        if Path(settings.pretrained).is_file():
            return ResolvedWeights(Path(settings.pretrained), "pretrained file", cfg)
        found = _find_in_hf_cache(cfg, settings.cache_dir)
        if found is not None:
            return ResolvedWeights(found, f"Hugging Face cache ({settings.pretrained})", cfg)
    if settings.allow_random_weights:
        return ResolvedWeights(None, "random weights (allow_random_weights)", cfg)
    raise WeightsMissingError(
        f"no weights for open_clip {settings.model} / {settings.pretrained or '-'} were found "
        "locally",
        _how_to_enable(settings),
    )


def _how_to_enable(settings: ClipSettings) -> str:
    repo = hf_repo(settings)
    ways = []
    if repo:
        ways.append(
            f"run `pictguard models --download` once (or `hf download {repo}`) with network "
            "access so the weights land in the Hugging Face cache (HF_HOME, or "
            "PICTGUARD_CLASSIFY__CLIP__CACHE_DIR)"
        )
    ways.append("set PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH to a local open_clip weights file")
    return "; or ".join(ways)


def describe_weights(settings: ClassifySettings) -> WeightsInfo:
    """Where the CLIP weights come from and whether they are present, for ``models``."""
    clip = settings.clip
    label = f"open_clip {clip.model}"
    try:
        resolved = resolve_weights(clip)
    except WeightsMissingError as exc:
        return WeightsInfo("clip", label, None, False, f"{exc}; to enable: {exc.how_to_enable}")
    except ClassifierError as exc:
        return WeightsInfo("clip", label, None, False, str(exc))
    location = str(resolved.path) if resolved.path else None
    return WeightsInfo(
        "clip", f"{label} from {resolved.source}", location, True, f"device: {_device(clip.device)}"
    )


def download_weights(settings: ClipSettings) -> Path:
    """Fetch the ``pretrained`` tag's weights into the Hugging Face cache (needs network)."""
    _register_configs(settings)
    cfg = _tag_cfg(settings)
    if not cfg:
        raise ClassifierError(
            f"open_clip has no pretrained tag {settings.pretrained!r} for {settings.model}; "
            f"known: {open_clip.list_pretrained_tags_by_model(settings.model)}"
        )
    from open_clip.pretrained import download_pretrained

    cache_dir = str(settings.cache_dir) if settings.cache_dir else None
    return Path(download_pretrained(cfg, cache_dir=cache_dir))


def _device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _fingerprint(path: Path) -> str:
    """A quick identity of a weights file: size plus hashes of its first and last MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


class Head(nn.Module):
    """Optional linear or one-hidden-layer MLP on the normalised image embedding."""

    def __init__(self, embed_dim: int, categories: Sequence[str], hidden: int = 0) -> None:
        super().__init__()
        self.categories = list(categories)
        out = len(self.categories)
        self.net: nn.Module = (
            nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
            if hidden
            else nn.Linear(embed_dim, out)
        )
        self.hidden = hidden

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(embedding))

    def save(self, path: Path) -> None:
        """Write the head in the format :meth:`load` reads."""
        torch.save(
            {
                "categories": self.categories,
                "hidden": self.hidden,
                "state_dict": self.net.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path, embed_dim: int) -> Head:
        """Read a head file: ``{"categories": [...], "hidden": int, "state_dict": {...}}``."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            head = cls(embed_dim, raw["categories"], int(raw.get("hidden", 0)))
            head.net.load_state_dict(raw["state_dict"])
        except (OSError, KeyError, RuntimeError, TypeError) as exc:
            raise ClassifierError(
                f"cannot load CLIP head {path}: {exc} — it must hold categories, hidden and a "
                f"state_dict for embeddings of size {embed_dim}"
            ) from exc
        return head


class ClipModel(Model):
    """Scores every concept of the policy file with one image embedding per image."""

    name = "clip"

    def __init__(self, settings: ClassifySettings) -> None:
        self.settings = settings.clip
        self.device = _device(self.settings.device)
        self.concepts: ConceptPolicy = load_concepts(self.settings.policy_path)
        self.model: nn.Module | None = None
        self.head: Head | None = None
        self.weights: ResolvedWeights | None = None
        self.image_size = 224
        self._text: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._version = f"clip:{self.settings.model}"
        self._head_digest = ""

    @property
    def version(self) -> str:
        return self._version

    @property
    def policy_digest(self) -> str:
        """Changes with the concept file and the head: part of the policy version."""
        return f"{self.concepts.digest}{self._head_digest}"

    @property
    def preprocessor(self) -> Preprocessor:
        return CenterCrop(self.image_size)

    @property
    def fp16(self) -> bool:
        return self.settings.fp16 and self.device.type == "cuda"

    def load(self) -> None:
        weights = resolve_weights(self.settings)  # WeightsMissingError goes to the engine
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self.model = self._create(weights)
        self.weights = weights
        preprocess_cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = preprocess_cfg.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, list | tuple) else size)
        self._mean = torch.tensor(preprocess_cfg.get("mean"), device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess_cfg.get("std"), device=self.device).view(1, 3, 1, 1)
        self._text = self._embed_prompts()
        if self.settings.head_path is not None:
            self.head = Head.load(self.settings.head_path, int(self._text.shape[1]))
            self.head.to(self.device).eval()
            self._head_digest = _fingerprint(self.settings.head_path)
        if weights.path is None:
            weights_id = "random-seed0"
        elif weights.source.startswith("Hugging") and self.settings.pretrained:
            weights_id = self.settings.pretrained
        else:
            weights_id = _fingerprint(weights.path)
        self._version = f"clip:{self.settings.model}@{weights_id}"
        log.info(
            "clip loaded",
            extra={
                "model": self.settings.model,
                "weights": weights.source,
                "device": str(self.device),
                "fp16": self.fp16,
                "concepts": len(self.concepts.concepts),
            },
        )

    def _create(self, weights: ResolvedWeights) -> nn.Module:
        tag_cfg = weights.tag_cfg
        kwargs: dict[str, Any] = {
            "device": self.device,
            # openai weights were trained with QuickGELU; open_clip only warns on a mismatch.
            "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
            "cache_dir": str(self.settings.cache_dir) if self.settings.cache_dir else None,
        }
        if tag_cfg.get("mean") is not None:
            kwargs["force_preprocess_cfg"] = {"mean": tag_cfg["mean"], "std": tag_cfg["std"]}
        try:
            if weights.random:
                # Seeded so "random weights" are the same on every start (tests, benchmarks).
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = open_clip.create_model(self.settings.model, pretrained=None, **kwargs)
            else:
                model = open_clip.create_model(
                    self.settings.model, pretrained=str(weights.path), **kwargs
                )
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise ClassifierError(
                f"cannot build open_clip {self.settings.model} from {weights.source}: {exc}"
            ) from exc
        model.eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    @torch.inference_mode()
    def _embed_prompts(self) -> torch.Tensor:
        assert self.model is not None
        tokenizer = open_clip.get_tokenizer(self.settings.model)
        tokens = tokenizer(self.concepts.prompts).to(self.device)
        with self._autocast():
            text = self.model.encode_text(tokens, normalize=True)  # type: ignore[operator]
        return text.float()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16)

    def close(self) -> None:
        self.model = None
        self.head = None
        self._text = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def embed(self, batch: Sequence[np.ndarray]) -> torch.Tensor:
        """L2-normalised image embeddings (float32) of uint8 ``H×W×3`` inputs."""
        if self.model is None or self._mean is None or self._std is None:
            raise ClassifierError("clip used before load()")
        pixels = torch.from_numpy(np.stack(batch))
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        # uint8 NHWC → normalised float NCHW on the device; channels_last is what the
        # NHWC buffer already is, so the permute costs no copy there.
        images = pixels.permute(0, 3, 1, 2).float().div_(255.0).sub_(self._mean).div_(self._std)
        images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            embedding = self.model.encode_image(images, normalize=True)  # type: ignore[operator]
        return embedding.float()

    @torch.inference_mode()
    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        assert self._text is not None
        embedding = self.embed(batch)
        similarities = (embedding @ self._text.T).cpu().numpy()
        outputs = self.concepts.score(similarities)
        if self.head is not None:
            probabilities = self.head(embedding).cpu().numpy()
            threshold = self.settings.head_threshold
            for output, row in zip(outputs, probabilities, strict=True):
                fired = set(output.categories)
                for category, value in zip(self.head.categories, row.tolist(), strict=True):
                    output.scores[f"clip-head:{category}"] = round(float(value), 4)
                    if value >= threshold:
                        fired.add(category)
                        output.labels.append(f"clip-head:{category}")
                output.categories = frozenset(fired)
        return outputs


MODEL = ClipModel
