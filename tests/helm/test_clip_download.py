"""The CLIP download init container runs only where it can work: clip is configured and the
image has open_clip (flavour cuda). The slim cpu image would crash-loop on it (helm binary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from classify.settings import ClassifySettings
from tests.helm.chart import BROKERS, helm_binary, install_notes, merge, pod_specs, render

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="no helm binary (set HELM_BIN or put helm on PATH)"
)

NO_CLIP = ["hashlist", "nudenet"]
WITH_CLIP = ["hashlist", "nudenet", "clip"]


def classify_pod(values: dict[str, Any], workdir: Path) -> dict[str, Any]:
    return pod_specs(render(merge(BROKERS, values), workdir))["Deployment/pg-pictguard-classify"]


@pytest.mark.parametrize(
    ("flavour", "classifiers", "download"),
    [
        ("cuda", WITH_CLIP, True),
        ("cuda", NO_CLIP, False),
        ("cpu", WITH_CLIP, False),  # the slim image has no open_clip: it would crash-loop
        ("cpu", NO_CLIP, False),
    ],
)
def test_weights_are_fetched_only_when_clip_can_run(
    tmp_path: Path, flavour: str, classifiers: list[str], download: bool
) -> None:
    values = {
        "classify": {"image": {"flavour": flavour}},
        "config": {"classify": {"classifiers": classifiers}},
    }
    spec = classify_pod(values, tmp_path)
    init = [c["args"][2:] for c in spec.get("initContainers", [])]
    assert init == ([["models", "--download"]] if download else [])
    expected_tag = "0.1.0-cuda" if flavour == "cuda" else "0.1.0"
    assert spec["containers"][0]["image"] == f"ghcr.io/pictguard/pictguard:{expected_tag}"


def test_the_chart_knows_the_default_classifiers(tmp_path: Path) -> None:
    """Without config.classify.classifiers the chart assumes pictguard's own default."""
    spec = classify_pod({}, tmp_path)
    has_download = bool(spec.get("initContainers"))
    assert has_download == ("clip" in ClassifySettings().classifiers)


def test_the_download_can_be_turned_off(tmp_path: Path) -> None:
    spec = classify_pod({"classify": {"modelCache": {"download": False}}}, tmp_path)
    assert "initContainers" not in spec


def test_notes_warn_when_clip_is_configured_on_the_slim_image(tmp_path: Path) -> None:
    notes = install_notes(merge(BROKERS, {"classify": {"image": {"flavour": "cpu"}}}), tmp_path)
    if notes is None:
        pytest.skip("this helm (3.x) needs a cluster for install --dry-run; helm 4 does not")
    assert "image flavour is cpu (classify.image.flavour)" in notes
    (tmp_path / "2").mkdir()
    quiet = install_notes(
        merge(
            BROKERS,
            {
                "classify": {"image": {"flavour": "cpu"}},
                "config": {"classify": {"classifiers": NO_CLIP}},
            },
        ),
        tmp_path / "2",
    )
    assert quiet is not None and "flavour is cpu" not in quiet
