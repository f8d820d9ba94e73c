"""NudeNet 3.x (YOLOv8-n ``320n.onnx``) through onnxruntime, batched.

The ONNX graph has a dynamic batch axis (input ``images``: ``[batch, 3, H, W]``; output
``[batch, 22, 2100]`` at 320 px: 4 box coordinates + 18 class scores per anchor), so a whole
batch is one ``session.run``. Decoding follows NudeNet's own: best class per anchor,
confidence filter, class-agnostic NMS.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from classify.preprocess import Letterbox, Preprocessor
from classify.registry import ClassifierError, Model, ModelOutput, WeightsInfo
from classify.settings import ClassifySettings

log = logging.getLogger(__name__)

INPUT_SIZE = 320
# Order of the model's class outputs (nudenet/nudenet.py).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# The labels that make an image sexual content; male chests, bellies, feet do not.
EXPOSED: frozenset[str] = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


def bundled_model_path() -> Path | None:
    """The ``320n.onnx`` shipped in the nudenet wheel, if the package is installed."""
    try:
        import nudenet
    except ImportError:
        return None
    path = Path(nudenet.__file__).parent / "320n.onnx"
    return path if path.is_file() else None


def _model_path(settings: ClassifySettings) -> Path | None:
    return settings.nudenet.model_path or bundled_model_path()


def describe_weights(settings: ClassifySettings) -> WeightsInfo:
    """Where the ONNX file comes from, for ``pictguard models``."""
    path = _model_path(settings)
    source = (
        "PICTGUARD_CLASSIFY__NUDENET__MODEL_PATH"
        if settings.nudenet.model_path
        else ("bundled in the nudenet package")
    )
    present = path is not None and path.is_file()
    return WeightsInfo(
        "nudenet",
        source,
        str(path) if path else None,
        present,
        f"providers: {', '.join(_providers(settings.nudenet.device))}",
    )


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("CUDA requested for nudenet but onnxruntime has no CUDA provider; using CPU")
    return ["CPUExecutionProvider"]


class NudenetModel(Model):
    """Exposed-body-part detector → ``nudenet:nsfw`` score and ``nudenet:<LABEL>`` labels."""

    name = "nudenet"

    def __init__(self, settings: ClassifySettings) -> None:
        self.settings = settings.nudenet
        self.nsfw_threshold = settings.policy.nudenet_nsfw_threshold
        self.counts_as_sexual = settings.policy.nudenet_counts_as_sexual
        self.path = _model_path(settings)
        self._session: ort.InferenceSession | None = None
        self._input_name = "images"

    @cached_property
    def version(self) -> str:
        if self.path is None or not self.path.is_file():
            return "nudenet:missing"
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return f"nudenet:{self.path.stem}@{digest}"

    @property
    def preprocessor(self) -> Preprocessor:
        return Letterbox(INPUT_SIZE)

    def load(self) -> None:
        if self.path is None or not self.path.is_file():
            raise ClassifierError(
                f"NudeNet model not found at {self.path}; install the nudenet package or set "
                "PICTGUARD_CLASSIFY__NUDENET__MODEL_PATH"
            )
        options = ort.SessionOptions()
        if self.settings.threads:
            options.intra_op_num_threads = self.settings.threads
        # Idle onnxruntime threads spin by default, taking the cores the decode pool needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), options, providers=_providers(self.settings.device)
            )
        except (RuntimeError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise ClassifierError(f"cannot load NudeNet model {self.path}: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name
        log.info(
            "nudenet loaded",
            extra={"path": str(self.path), "providers": self._session.get_providers()},
        )

    def close(self) -> None:
        self._session = None

    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        if self._session is None:
            raise ClassifierError("nudenet used before load()")
        # uint8 NHWC → float NCHW in 0..1, the scaling NudeNet was trained with.
        blob = np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)
        (output,) = self._session.run(None, {self._input_name: blob})
        return [self._decode(rows) for rows in np.asarray(output)]

    def _decode(self, raw: np.ndarray) -> ModelOutput:
        rows = raw.T  # (anchors, 4 + classes)
        class_scores = rows[:, 4:]
        best = class_scores.argmax(axis=1)
        confidence = class_scores[np.arange(len(rows)), best]
        keep = confidence >= self.settings.min_confidence
        if not keep.any():
            return ModelOutput(scores={"nudenet:nsfw": 0.0})
        cx, cy, w, h = rows[keep, :4].T
        boxes = np.column_stack([cx - w / 2, cy - h / 2, w, h])  # NMSBoxes takes x, y, w, h
        scores = confidence[keep]
        classes = best[keep]
        picked = cv2.dnn.NMSBoxes(
            boxes.tolist(),
            scores.tolist(),
            self.settings.min_confidence,
            self.settings.iou_threshold,
        )
        detections: dict[str, float] = {}
        for index in np.asarray(picked, dtype=np.int64).reshape(-1):
            label = LABELS[int(classes[index])]
            detections[label] = max(detections.get(label, 0.0), float(scores[index]))
        nsfw = max((s for label, s in detections.items() if label in EXPOSED), default=0.0)
        labels = sorted(
            f"nudenet:{label}"
            for label, s in detections.items()
            if label in EXPOSED and s >= self.nsfw_threshold
        )
        categories: set[str] = set()
        if nsfw >= self.nsfw_threshold:
            categories.add("nsfw")
            if self.counts_as_sexual:
                categories.add("sexual")
        return ModelOutput({"nudenet:nsfw": round(nsfw, 4)}, labels, frozenset(categories))


MODEL = NudenetModel
