"""Helpers of the tests under tests/observability/ (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.colour_model import ColourModel

MODEL = "otel-colour"


class OtelColour(ColourModel):
    """The colour model under a name of its own, never failing."""

    name = MODEL
    fail_on_green = False


OtelColour.register()


MAGENTA = (250, 10, 245)  # flagged


GREY = (128, 128, 128)  # clean


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 48)) -> bytes:
    """A solid-colour PNG; vary the colour slightly for distinct sha256 sums."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


async def until(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``check`` until it holds (the pipeline runs in other tasks meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


class Spans:
    """Finished spans, with the look-ups the assertions need."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.all = list(spans)
        self.by_id = {s.context.span_id: s for s in self.all}

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str, trace_id: int) -> ReadableSpan:
        found = [s for s in self.in_trace(trace_id) if s.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r} in the trace: {found}"
        return found[0]

    def under(self, name: str, ancestor: ReadableSpan) -> ReadableSpan:
        """The one span named ``name`` somewhere below ``ancestor``."""
        found = [
            s
            for s in self.in_trace(ancestor.context.trace_id)
            if s.name == name and self._descends(s, ancestor)
        ]
        assert len(found) == 1, f"{len(found)} spans named {name!r} under {ancestor.name!r}"
        return found[0]

    def _descends(self, span: ReadableSpan, ancestor: ReadableSpan) -> bool:
        current = self.parent(span)
        while current is not None:
            if current.context.span_id == ancestor.context.span_id:
                return True
            current = self.parent(current)
        return False

    def in_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.all if s.context.trace_id == trace_id]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def ancestors(self, span: ReadableSpan) -> list[str]:
        names = []
        current = self.parent(span)
        while current is not None:
            names.append(current.name)
            current = self.parent(current)
        return names


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text → {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    hits = [v for (n, ls), v in found.items() if n == name and wanted <= ls]
    assert hits, f"no sample {name}{labels}"
    return sum(hits)
