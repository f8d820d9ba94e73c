"""Settings of the classify role (section ``classify``).

Environment variables nest with ``__``: ``PICTGUARD_CLASSIFY__MAX_BATCH=64``,
``PICTGUARD_CLASSIFY__CLIP__CHECKPOINT_PATH=/models/vit-l-14.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from classify.feeds.settings import FeedsSettings
from classify.remote.settings import RemoteSettings, WorkerSettings
from pipeline.settings import SharedConfig


class ClipSettings(BaseModel):
    """Where the open_clip model comes from and how it runs.

    Weights are resolved in this order: ``checkpoint_path`` (a local file), then
    ``pretrained`` (an open_clip tag such as ``openai``, looked up in the Hugging Face cache
    only — pictguard never downloads at start; run ``pictguard models --download`` or
    ``hf download`` once), then random weights if ``allow_random_weights`` (tests and
    benchmarks only).
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default="ViT-L-14", description="open_clip model name (see open_clip.list_models())"
    )
    pretrained: str | None = Field(
        default="openai",
        description="open_clip pretrained tag resolved through the Hugging Face cache",
    )
    checkpoint_path: Path | None = Field(
        default=None, description="Local weights file (state dict); wins over `pretrained`"
    )
    model_config_path: Path | None = Field(
        default=None, description="Extra open_clip model config JSON file or folder to register"
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Hugging Face cache folder; default: HF_HOME / ~/.cache/huggingface",
    )
    allow_random_weights: bool = Field(
        default=False,
        description="Run with random weights when none are found (tests/benchmarks only)",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    fp16: bool = Field(default=True, description="fp16 autocast on CUDA (ignored on CPU)")
    policy_path: Path | None = Field(
        default=None,
        description="Concept policy YAML; default: the one shipped in classify/policies",
    )
    head_path: Path | None = Field(
        default=None, description="Optional linear/MLP head on the image embedding (torch file)"
    )
    head_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Head probability at which its category fires"
    )
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 keeps torch's default")


class NudenetSettings(BaseModel):
    """The NudeNet 320n detector run through onnxruntime."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = Field(
        default=None, description="ONNX file; default: the 320n.onnx bundled in the nudenet package"
    )
    device: str = Field(default="auto", description="auto | cpu | cuda (CUDA execution provider)")
    min_confidence: float = Field(
        default=0.25, ge=0, le=1, description="Detections below are dropped"
    )
    iou_threshold: float = Field(default=0.45, ge=0, le=1, description="NMS overlap threshold")
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = default")


class HmaSettings(BaseModel):
    """An HMA 2.0 (Hasher-Matcher-Actioner / OpenMediaMatch) instance asked for every image
    when ``hma`` is in ``classify.classifiers``: its banks (filled from NCMEC, StopNCII,
    Tech Against Terrorism or your own curation) then match here too."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="Base URL of the HMA instance (its matcher role), e.g. http://hma:5000; "
        "lookups go to <url>/m/lookup",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Sent as the whole value of `auth_header` on every lookup (HMA has no "
        "authentication of its own; the proxy in front of it may want one), e.g. 'Bearer …'",
    )
    auth_header: str = Field(default="Authorization", description="Header that carries `token`")
    banks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Only match these banks (HMA's `banks` filter; comma-separated in the "
        "environment); empty: every enabled bank",
    )
    signal_types: Annotated[list[Literal["pdq", "video_md5"]], NoDecode] = Field(
        default_factory=lambda: list[Literal["pdq", "video_md5"]](["pdq"]),
        description="What is looked up: pdq (of the decoded image; images whose PDQ quality "
        "is below classify.pdq_min_quality are not asked, as HMA's own hasher would give "
        "none) and/or video_md5 (MD5 of the bytes, HMA's only MD5 type)",
    )
    timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Longest wait for HMA's answer per image (it runs while the models run)",
    )
    on_unavailable: Literal["error", "models"] = Field(
        default="error",
        description="When HMA does not answer (timeout, unreachable, an error status) and "
        "the models would allow the image. error: an error verdict (reason timeout or "
        "model_failed; uploads follow api.on_error), so nothing is called clean unasked; "
        "models: the models' allow stands, labelled hma:unavailable. A model flag always "
        "stands; such verdicts are never cached",
    )
    default_category: Literal["csam", "nsfw"] = Field(
        default="csam", description="What a match in a bank not named in `categories` is"
    )
    categories: dict[str, Literal["csam", "nsfw"]] = Field(
        default_factory=dict,
        description="Bank name → csam or nsfw (e.g. a StopNCII bank: nsfw)",
    )

    @field_validator("banks", "signal_types", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value


class PolicySettings(BaseModel):
    """How category scores become a decision."""

    model_config = ConfigDict(extra="forbid")

    nudenet_nsfw_threshold: float = Field(
        default=0.5, ge=0, le=1, description="NudeNet exposed-part confidence that counts as nsfw"
    )
    nudenet_counts_as_sexual: bool = Field(
        default=True,
        description="A NudeNet nsfw hit is a sexual signal for CSAM = underage AND sexual",
    )
    flag_nsfw: bool = Field(
        default=True, description="Emit flag_nsfw (False: nsfw-only hits allow)"
    )
    drawn_underage_as: Literal["flag_csam", "flag_nsfw"] = Field(
        default="flag_csam",
        description="Decision for drawn/anime content that is underage AND sexual",
    )


class ClassifySettings(BaseModel):
    """How objects are fetched and classified."""

    model_config = ConfigDict(extra="forbid")

    max_object_bytes: int = Field(
        default=50 * 1024 * 1024,
        gt=0,
        description="Larger objects get an error verdict without download",
    )
    concurrency: int = Field(
        default=32,
        gt=0,
        description="Bulk scan requests (fetched from the store) processed at once per "
        "classify process",
    )
    sync_concurrency: int = Field(
        default=128,
        gt=0,
        description="Uploads (sync lane) processed at once per classify process, in slots of "
        "their own so a backfill never delays them",
    )
    fetch_batch: int = Field(default=64, gt=0, description="Messages read from the bus per poll")
    inflight_batches: int = Field(
        default=4,
        gt=0,
        description="Batches handled at once on the bulk lane; the next is fetched while one "
        "waits on the model (offsets still commit in order)",
    )
    sync_inflight_batches: int = Field(
        default=64,
        gt=0,
        description="Batches handled at once on the sync lane: uploads arrive a few per fetch, "
        "and every waiting one should reach the model batcher (the API's max_inflight bounds "
        "them)",
    )

    classifiers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["hashlist", "nudenet", "clip"],
        description="Classifiers by name (hashlist, nudenet, clip, hma, or a registered one), "
        "in order; hashlist runs before any model, hma (an HMA 2.0 lookup, see classify.hma) "
        "while the models run",
    )
    # Decoding
    decode_workers: int = Field(default=2, gt=0, description="Decode/hash pool size")
    decode_pool: Literal["thread", "process"] = Field(
        default="thread",
        description="thread (low overhead) or process (scales past the GIL on big boxes)",
    )
    max_pixels: int = Field(
        default=64_000_000, gt=0, description="Decompression-bomb limit per frame"
    )
    max_frames: int = Field(
        default=16,
        gt=0,
        description="Frames classified per video or animation (GIF, APNG, WebP): half spread "
        "over the keyframes, the rest evenly over all frames; the worst frame decides. An "
        "upload with a deadline gets fewer when the models could not finish them in time",
    )
    video_max_pixels: int = Field(
        default=3840 * 2160,
        gt=0,
        description="Largest video frame (width × height) decoded, checked from the headers "
        "before any frame decodes and enforced inside FFmpeg (pict-rs's default "
        "media.video.max_area is the same 4K UHD); larger videos get a too_large verdict",
    )
    video_max_duration_s: float = Field(
        default=3600.0,
        gt=0,
        description="Longer videos (declared or timestamped) get a too_large verdict",
    )
    video_max_decode_s: float = Field(
        default=10.0,
        gt=0,
        description="Decoding time per video or animation (index and frames); when it runs "
        "out the frames decoded so far are classified and the verdict says so "
        "(media.limited), or the video gets a timeout verdict if none was",
    )
    video_max_memory_mb: int = Field(
        default=512,
        gt=0,
        description="Largest decoder working set per video, estimated from the declared "
        "frame size and pixel format (16 reference frames + 2 + threads) before decoding; "
        "above it the video gets a too_large verdict",
    )
    video_threads: int = Field(
        default=1,
        ge=1,
        le=16,
        description="FFmpeg decoder threads per video (the decode pool already runs "
        "classify.decode_workers files at once)",
    )
    hash_size: int = Field(
        default=256,
        gt=0,
        description="PDQ is computed from a frame shrunk no further than this on its short "
        "side (256: within 6 bits of the reference on the full image)",
    )
    # Hash lists
    pdq_max_distance: int = Field(
        default=31, ge=0, le=256, description="PDQ match: Hamming distance"
    )
    pdq_min_quality: int = Field(
        default=50, ge=0, le=100, description="PDQ below this is not matched"
    )
    # Verdict cache
    verdict_cache: bool = Field(
        default=True, description="Reuse verdicts by sha256 + model/policy version"
    )
    verdict_cache_max_entries: int = Field(
        default=500_000,
        gt=0,
        description="Distributed mode: cached verdicts each classify and API replica holds in "
        "memory (about 600 bytes each); past it the oldest are forgotten there, which costs a "
        "model run when that content comes back. The single-process cache is on disk and "
        "unbounded",
    )
    # Batching
    max_batch: int = Field(default=32, gt=0, description="Images per model call")
    max_wait_ms: float = Field(default=5.0, ge=0, description="Longest wait to fill a batch")

    @field_validator("classifiers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # PICTGUARD_CLASSIFY__CLASSIFIERS=hashlist,nudenet (a JSON list works as well).
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    clip: ClipSettings = Field(default_factory=ClipSettings)  # type: ignore[arg-type]
    nudenet: NudenetSettings = Field(default_factory=NudenetSettings)  # type: ignore[arg-type]
    policy: PolicySettings = Field(default_factory=PolicySettings)  # type: ignore[arg-type]
    hma: HmaSettings = Field(default_factory=HmaSettings)  # type: ignore[arg-type]
    feeds: FeedsSettings = Field(default_factory=FeedsSettings)  # type: ignore[arg-type]
    remote: RemoteSettings = Field(default_factory=RemoteSettings)  # type: ignore[arg-type]
    worker: WorkerSettings = Field(default_factory=WorkerSettings)  # type: ignore[arg-type]


class ClassifyConfig(SharedConfig, Protocol):
    """What the classify role reads of the whole configuration."""

    @property
    def classify(self) -> ClassifySettings: ...
