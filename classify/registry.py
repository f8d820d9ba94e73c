"""Classifiers by name: one interface, a registry of loaders, and what a model returns.

Like open_clip's model registry, a classifier is a name plus a loader that takes the
settings; ``classify.classifiers`` lists names in order. ``hashlist`` is not a model (the
engine checks hash lists before any model) but is a name in the same list so it can be
switched off for a benchmark. A :class:`Matcher` (``hma``) is a classifier that looks an
image's hashes up in a service instead of running on its pixels; the engine asks it after
the hash lists, while the models run.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from classify.preprocess import Preprocessor
from classify.settings import ClassifySettings
from pipeline.errors import PictguardError

HASHLIST = "hashlist"


class ClassifierError(PictguardError, RuntimeError):
    """A classifier cannot be loaded or run; the message says what to change."""


class WeightsMissingError(ClassifierError):
    """A model's weights are not available locally; ``how_to_enable`` tells the admin."""

    def __init__(self, message: str, how_to_enable: str) -> None:
        super().__init__(message)
        self.how_to_enable = how_to_enable


@dataclass(slots=True)
class ModelOutput:
    """What one model concluded about one frame.

    ``scores`` are namespaced (``clip:underage``, ``nudenet:nsfw``); ``labels`` name what
    fired (``clip:sexual:<concept>``, ``nudenet:FEMALE_BREAST_EXPOSED``); ``categories`` are
    the policy categories this model considers present (``underage``, ``sexual``, …).
    """

    scores: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class WeightsInfo:
    """Where a model's weights come from, for ``pictguard models``."""

    name: str
    source: str
    location: str | None
    present: bool
    detail: str = ""


class Model(abc.ABC):
    """A batched image model. ``load`` and ``predict`` block; the engine calls them in threads."""

    name: str

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Identifies the weights and preprocessing; part of the verdict cache key."""

    @property
    @abc.abstractmethod
    def preprocessor(self) -> Preprocessor:
        """The decode-pool step that produces this model's uint8 input."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights; raise :class:`WeightsMissingError` when they are not available."""

    @abc.abstractmethod
    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        """One output per ``H×W×3`` uint8 input, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most models hold nothing to free
        """Release the model (sessions, GPU memory)."""


@dataclass(frozen=True, slots=True)
class HashQuery:
    """What a matcher is asked about one image: its hashes (``md5`` only when a matcher
    wants it, ``pdq`` None when the image has no usable one)."""

    sha256: str
    md5: str | None
    pdq: str | None
    pdq_quality: int | None


@dataclass(frozen=True, slots=True)
class MatchOutcome:
    """A matcher's answer for one image.

    ``matched`` is the verdict's ``matched`` when the service knows the image (with its
    provenance: bank and content id), ``category`` what that makes it; ``unavailable``
    says why there is no answer (timeout, unreachable, refused) — never read as clean.
    """

    matched: str | None = None
    category: Literal["csam", "nsfw"] = "csam"
    labels: tuple[str, ...] = ()
    unavailable: str | None = None
    timed_out: bool = False


class Matcher(abc.ABC):
    """A hash lookup service as a classifier. ``lookup`` is async and bounds its own time."""

    name: str
    wants_md5: bool = False
    # An unanswered lookup when the models would allow: an error verdict, or the models'.
    on_unavailable: Literal["error", "models"] = "error"

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Identifies the service and what is asked of it."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections; raise :class:`ClassifierError` when it is not configured."""

    @abc.abstractmethod
    async def lookup(self, query: HashQuery) -> MatchOutcome:
        """The service's answer; never raises for a service that is down or slow."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


ModelFactory = Callable[[ClassifySettings], Model]
WeightsProbe = Callable[[ClassifySettings], WeightsInfo]
_MODELS: dict[str, tuple[ModelFactory, WeightsProbe]] = {}
MatcherFactory = Callable[[ClassifySettings], Matcher]
_MATCHERS: dict[str, tuple[MatcherFactory, WeightsProbe]] = {}


def register(name: str, factory: ModelFactory, probe: WeightsProbe) -> None:
    """Make a model available under ``name`` in ``classify.classifiers``."""
    _MODELS[name] = (factory, probe)


def register_matcher(name: str, factory: MatcherFactory, probe: WeightsProbe) -> None:
    """Make a matcher available under ``name`` in ``classify.classifiers``."""
    _MATCHERS[name] = (factory, probe)


# Built-in matchers, imported on first use; each module exposes ``MATCHER`` and
# ``describe_weights``.
_BUILTIN_MATCHERS = {"hma": "classify.models.hma"}


def is_matcher(name: str) -> bool:
    """Whether ``name`` is a matcher (a lookup service), not a model."""
    return name in _MATCHERS or name in _BUILTIN_MATCHERS


def _lookup_matcher(name: str) -> tuple[MatcherFactory, WeightsProbe]:
    if name not in _MATCHERS:
        module = importlib.import_module(_BUILTIN_MATCHERS[name])
        register_matcher(name, module.MATCHER, module.describe_weights)
    return _MATCHERS[name]


def create_matcher(name: str, settings: ClassifySettings) -> Matcher:
    """A new, not yet started matcher by name."""
    factory, _ = _lookup_matcher(name)
    return factory(settings)


# Built-in models, imported on first use: the clip module pulls in torch, which the CLI's
# hash commands and a NudeNet-only deployment need not load. Each module exposes ``MODEL``
# (the factory) and ``describe_weights``.
_BUILTIN = {"nudenet": "classify.models.nudenet", "clip": "classify.models.clip"}
# Checks that run before a built-in model's module is imported, with the package the model
# needs: each module's ``certainly_missing(settings)`` returns the WeightsMissingError to
# report when the weights cannot be there, looking at files only (importing torch takes
# many seconds).
_PRECHECKS = {"clip": ("classify.models.clip_weights", "open_clip")}


def _lookup(name: str) -> tuple[ModelFactory, WeightsProbe]:
    if name not in _MODELS and name in _BUILTIN:
        try:
            module = importlib.import_module(_BUILTIN[name])
        except ImportError as exc:
            # An install without the optional extra (`pip install .`, the slim image):
            # the model is simply absent, like one without weights, and the admin is told.
            register(name, *_not_installed(name, exc))
        else:
            register(name, module.MODEL, module.describe_weights)
    try:
        return _MODELS[name]
    except KeyError:
        raise ClassifierError(
            f"unknown classifier {name!r}; known: {', '.join(available())} "
            "(check PICTGUARD_CLASSIFY__CLASSIFIERS)"
        ) from None


class Unavailable(Model):
    """Stands in for a model that cannot run here: loading it says why and what to do."""

    def __init__(self, name: str, error: WeightsMissingError) -> None:
        self.name = name
        self.error = error

    @property
    def version(self) -> str:
        return f"{self.name}:unavailable"

    @property
    def preprocessor(self) -> Preprocessor:
        raise ClassifierError(str(self.error))

    def load(self) -> None:
        raise self.error

    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        raise ClassifierError(str(self.error))


def _not_installed(name: str, exc: ImportError) -> tuple[ModelFactory, WeightsProbe]:
    missing = exc.name or str(exc)
    how = (
        f"install the optional packages: pip install 'pictguard[{name}]' "
        "(or use the CUDA image), then restart"
    )
    message = f"{name} is not installed ({missing} is missing)"

    def factory(settings: ClassifySettings) -> Model:
        return Unavailable(name, WeightsMissingError(message, how))

    def probe(settings: ClassifySettings) -> WeightsInfo:
        return WeightsInfo(name, "not installed", None, False, f"{message}; {how}")

    return factory, probe


def _certainly_missing(name: str, settings: ClassifySettings) -> WeightsMissingError | None:
    """The precheck's answer for a built-in model not imported yet (None: load it)."""
    if name in _MODELS or name not in _PRECHECKS:
        return None  # already imported, or no precheck: the real check is as cheap
    module, package = _PRECHECKS[name]
    if importlib.util.find_spec(package) is None:
        return None  # not installed: _lookup stands in a model that says what to install
    check: Callable[[ClassifySettings], WeightsMissingError | None]
    check = importlib.import_module(module).certainly_missing
    return check(settings)


def available() -> list[str]:
    """Every known classifier name."""
    return [HASHLIST, *dict.fromkeys([*_BUILTIN, *_MODELS, *_BUILTIN_MATCHERS, *_MATCHERS])]


def create(name: str, settings: ClassifySettings) -> Model:
    """A new, not yet loaded model by name."""
    missing = _certainly_missing(name, settings)
    if missing is not None:
        return Unavailable(name, missing)
    factory, _ = _lookup(name)
    return factory(settings)


def describe(name: str, settings: ClassifySettings) -> WeightsInfo:
    """Where ``name``'s weights come from and whether they are present."""
    if name == HASHLIST:
        # Built in: sha256 and PDQ against the hashlists table; nothing to download.
        return WeightsInfo(HASHLIST, "built in (needs none)", None, True)
    if is_matcher(name):
        return _lookup_matcher(name)[1](settings)
    missing = _certainly_missing(name, settings)
    if missing is not None:
        return WeightsInfo(
            name, "not found", None, False, f"{missing}; to enable: {missing.how_to_enable}"
        )
    try:
        _, probe = _lookup(name)
    except ClassifierError:
        return WeightsInfo(name, "unknown classifier", None, False)
    return probe(settings)
