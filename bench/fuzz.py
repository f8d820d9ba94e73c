"""Coverage-guided fuzzing (atheris / libFuzzer) of what parses untrusted bytes.

Targets, each with the promise the fuzzer checks:

- ``decode``: :func:`classify.decode.prepare` on any bytes returns a result, never raises
  (seeded with generated images and the malicious set of tests/reliability/hostile.py);
- ``events``: :func:`ingest.sources.parse` of any payload, for every notification source,
  never raises;
- ``contracts``: :func:`pipeline.events.decode` of any bytes as a scan request or a verdict
  raises nothing but :class:`pipeline.events.SchemaError`.

A broken promise stops the run with the input that broke it (``crash-*`` in the working
folder) and exit status 1. Not part of ``make test``; needs ``pip install atheris``.

    python bench/fuzz.py decode --seconds 60
    python bench/fuzz.py events --seconds 60 -- -max_len=65536
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atheris

with atheris.instrument_imports(include=["classify", "ingest", "pipeline", "PIL"]):
    from classify.decode import DecodeOptions, prepare
    from classify.preprocess import CenterCrop, Letterbox
    from ingest.sources import SourceName, parse
    from pipeline.events import ScanRequest, SchemaError, Verdict, decode

_OPTIONS = DecodeOptions(max_frames=4, preprocessors=(CenterCrop(224), Letterbox(320)))
_SOURCES: list[SourceName] = list(get_args(SourceName))


def fuzz_decode(data: bytes) -> None:
    prepare(data, _OPTIONS)


def fuzz_events(data: bytes) -> None:
    if not data:
        return
    source = _SOURCES[data[0] % len(_SOURCES)]
    parse(data[1:], source=source, message_key=data[1:17] or None)


def fuzz_contracts(data: bytes) -> None:
    for model in (ScanRequest, Verdict):
        with contextlib.suppress(SchemaError):
            decode(data, model)


TARGETS = {"decode": fuzz_decode, "events": fuzz_events, "contracts": fuzz_contracts}


def seeds(target: str, folder: Path) -> None:
    """A starting corpus, so the fuzzer begins from well-formed inputs."""
    from pipeline.samples import image_bytes

    found: dict[str, bytes] = {}
    if target == "decode":
        from tests.reliability.hostile import hostile_set

        for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
            found[f"small.{fmt.lower()}"] = image_bytes(1, fmt, 32)
        found.update({k: v for k, v in hostile_set().items() if len(v) < 1_000_000})
    elif target == "events":
        from tests.ingest import payloads

        event = payloads.minio_event("bucket", "a/b c.png", size=10, etag="e")
        found["minio"] = bytes([_SOURCES.index("minio")]) + event
        found["aws"] = bytes([_SOURCES.index("aws")]) + payloads.aws_event(
            "bucket", "a/b.png", size=10, etag="e"
        )
    else:
        from pipeline.events import encode

        found["request"] = encode(ScanRequest(content=b"x", content_type="image/png"))
        found["verdict"] = encode(Verdict(request_id="r", decision="allow"))
    for name, data in found.items():
        (folder / name).write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --")
    args = parser.parse_args()
    corpus = Path(tempfile.mkdtemp(prefix=f"pictguard-fuzz-{args.target}-"))
    seeds(args.target, corpus)
    argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        "-rss_limit_mb=4096",
        "-timeout=20",
        *args.libfuzzer,
        str(corpus),
    ]
    atheris.Setup(argv, TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
