"""Classification throughput: pictguard's engine against the one-at-a-time baseline.

For each model, the same generated images and the same model object are run two ways in
one process:

- **engine**: bytes → verdict through :class:`classify.engine.ClassifyEngine` (decode pool,
  sha256 + PDQ, hash lists, dynamic batching, one image encode per image), many requests
  in flight as the classify stage runs them;
- **baseline**: what the existing Lemmy tool does — one image at a time, decoded, resized
  and run through the model, the CLIP image encoded twice (once per concept group); for
  NudeNet, the nudenet package's own ``NudeDetector.detect`` per image;
- **model-only**: the model call alone on full batches of one preprocessed image, the
  ceiling for the engine on this machine (printed in the detail column).

It also measures PDQ lookups per second against an index of 1M entries.

Random CLIP weights are fine for throughput. Examples::

    python bench/classify.py --quick
    python bench/classify.py --device cuda --n 4096 --models clip-l14 --batch 256 \\
        --decode-pool process --decode-workers 14
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classify.base import ClassifyTables
from classify.engine import ClassifyEngine
from classify.pdq_index import PdqIndex
from classify.settings import ClassifySettings, ClipSettings, NudenetSettings
from pipeline.state.memory import MemoryTable

MODELS = {
    "clip-b32": ("clip", "ViT-B-32"),
    "clip-l14": ("clip", "ViT-L-14"),
    "nudenet": ("nudenet", None),
}


@dataclass
class Result:
    name: str
    engine_ips: float
    baseline_ips: float
    detail: str

    @property
    def ratio(self) -> float:
        return self.engine_ips / self.baseline_ips if self.baseline_ips else float("nan")


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """Distinct JPEGs (so no verdict-cache hits) of phone-photo-like sizes."""
    rng = random.Random(seed)
    sizes = [(1280, 960), (1024, 768), (800, 600), (1600, 1200), (720, 1280)]
    out = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        colour = np.array([rng.random() for _ in range(3)], dtype=np.float32)
        array = np.clip((colour * (1 - x) + (1 - colour) * y) * 255, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            box = (x0, y0, x0 + rng.randrange(20, width // 2), y0 + rng.randrange(20, height // 2))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


def settings_for(kind: str, arch: str | None, args: argparse.Namespace) -> ClassifySettings:
    clip: dict[str, Any] = {"device": args.device, "threads": args.torch_threads}
    if arch is not None:
        clip.update(model=arch, pretrained=None, allow_random_weights=True)
    return ClassifySettings(
        classifiers=["hashlist", kind],
        max_batch=args.batch,
        max_wait_ms=args.wait_ms,
        decode_workers=args.decode_workers,
        decode_pool=args.decode_pool,
        max_frames=1,
        clip=ClipSettings.model_validate(clip),
        nudenet=NudenetSettings(device=args.device),
    )


async def start_engine(settings: ClassifySettings) -> ClassifyEngine:
    tables = ClassifyTables(MemoryTable("hashlists"), MemoryTable("verdict_cache"))
    engine = ClassifyEngine(settings, tables)
    await engine.start()
    return engine


async def run_engine(engine: ClassifyEngine, data: list[bytes], concurrency: int) -> float:
    """Images/s for ``data`` through the engine, ``concurrency`` requests in flight."""
    limit = asyncio.Semaphore(concurrency)

    async def one(item: bytes) -> None:
        async with limit:
            result = await engine.evaluate(item)
        if result.decision.value == "error":
            raise RuntimeError(f"engine error in benchmark: {result.reason} {result.detail}")

    started = time.perf_counter()
    await asyncio.gather(*(one(item) for item in data))
    return len(data) / (time.perf_counter() - started)


def clip_baseline(engine: ClassifyEngine, data: list[bytes]) -> float:
    """One image at a time, open_clip's own preprocessing, the image encoded twice."""
    import open_clip
    import torch

    wrapper: Any = engine.models[0]
    model: Any = wrapper.model
    device = wrapper.device
    text = wrapper._text
    preprocess = open_clip.image_transform(wrapper.image_size, is_train=False)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")
    started = time.perf_counter()
    for item in data:
        image = Image.open(io.BytesIO(item)).convert("RGB")
        image.thumbnail((512, 512))
        pixels = preprocess(image).unsqueeze(0).to(device)
        with torch.no_grad(), autocast:
            for _ in range(2):  # underage prompts, then sexual prompts: two encodes
                embedding = model.encode_image(pixels, normalize=True).float()
                (embedding @ text.T).cpu()
    return len(data) / (time.perf_counter() - started)


class NudenetBaseline:
    """The nudenet package's own detector, one image at a time."""

    def __init__(self) -> None:
        from nudenet import NudeDetector

        self.detector = NudeDetector()

    def __call__(self, data: list[bytes]) -> float:
        started = time.perf_counter()
        for item in data:
            self.detector.detect(item)
        return len(data) / (time.perf_counter() - started)


def model_only(engine: ClassifyEngine, data: bytes, batch: int, seconds: float = 3.0) -> float:
    """Images/s of the model call alone, full batches of one preprocessed image.

    The ceiling for bytes → verdict on this machine: decoding, hashing and batching can
    only approach it. engine/baseline can never exceed model-only/baseline.
    """
    model: Any = engine.models[0]
    frame = Image.open(io.BytesIO(data)).convert("RGB")
    inputs = [model.preprocessor(frame)] * batch
    model.predict(inputs)
    done, started = 0, time.perf_counter()
    while done < 2 * batch or time.perf_counter() - started < seconds:
        model.predict(inputs)
        done += batch
    return done / (time.perf_counter() - started)


def bench_model(name: str, args: argparse.Namespace, rounds: list[list[bytes]]) -> Result:
    """Engine and baseline alternate round by round (a noisy machine hits both alike)."""
    kind, arch = MODELS[name]
    settings = settings_for(kind, arch, args)

    async def go() -> Result:
        engine = await start_engine(settings)
        nudenet = NudenetBaseline() if kind == "nudenet" else None
        warmup = make_images(min(args.batch, 8), seed=999)
        await run_engine(engine, warmup, args.concurrency)
        engine_runs, baseline_runs = [], []
        for data in rounds:
            engine_runs.append(await run_engine(engine, data, args.concurrency))
            subset = data[: max(2, len(data) // args.baseline_fraction)]
            baseline_runs.append(
                clip_baseline(engine, subset) if nudenet is None else nudenet(subset)
            )
        stats = engine.batchers[kind].stats
        ceiling = model_only(engine, rounds[0][0], args.batch)
        detail = (
            f"rounds={len(rounds)} batches={stats.calls} "
            f"mean_batch={statistics.mean(stats.sizes):.1f} "
            f"device={getattr(engine.models[0], 'device', 'onnxruntime')} "
            f"model-only {ceiling:.1f} img/s"
        )
        await engine.stop()
        return Result(
            name, statistics.median(engine_runs), statistics.median(baseline_runs), detail
        )

    return asyncio.run(go())


def bench_pdq(entries: int, queries: int) -> list[str]:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (entries, 32), dtype=np.uint8)
    index = PdqIndex()
    started = time.perf_counter()
    chunk = 100_000
    for start in range(0, entries, chunk):
        rows = codes[start : start + chunk]
        index.add_many([(f"k{start + i}", bytes(row).hex()) for i, row in enumerate(rows)])
    build = time.perf_counter() - started
    near = []
    for i in range(queries):
        bits = np.unpackbits(codes[i * 7 % entries])
        flip = rng.choice(256, size=int(rng.integers(0, 32)), replace=False)
        bits[flip] ^= 1
        near.append(np.packbits(bits).tobytes().hex())
    started = time.perf_counter()
    hits = sum(index.search([q], 31)[0] is not None for q in near)
    single = queries / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, queries, 256):
        index.search(near[start : start + 256], 31)
    batched = queries / (time.perf_counter() - started)
    return [
        f"PDQ index: {entries:,} entries (faiss IndexBinaryFlat), built in {build:.1f} s",
        f"  single-query lookups/s: {single:,.0f} ({hits}/{queries} near copies found, exact)",
        f"  batched (256) lookups/s: {batched:,.0f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--n", type=int, default=None, help="images per model")
    parser.add_argument(
        "--models", default="clip-b32,clip-l14,nudenet", help=f"comma list of {', '.join(MODELS)}"
    )
    parser.add_argument("--quick", action="store_true", help="small N, 100k PDQ entries")
    parser.add_argument(
        "--batch", type=int, default=None, help="max_batch (default: 16 CPU, 256 GPU)"
    )
    parser.add_argument("--wait-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight")
    parser.add_argument("--decode-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--decode-pool", choices=("thread", "process"), default=None, help="default: process on GPU"
    )
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--pdq-entries", type=int, default=None)
    parser.add_argument("--baseline-fraction", type=int, default=2, help="baseline runs n/this")
    parser.add_argument("--rounds", type=int, default=None, help="engine/baseline rounds")
    parser.add_argument("--skip-pdq", action="store_true")
    args = parser.parse_args(argv)

    import torch

    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.batch = args.batch or (256 if gpu else 16)
    args.decode_pool = args.decode_pool or ("process" if gpu else "thread")
    args.concurrency = args.concurrency or args.batch * 4
    n = args.n or (32 if args.quick else (4096 if gpu else 64))
    args.rounds = args.rounds or (2 if args.quick else 3)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    print(
        f"classify bench: n={n} batch={args.batch} wait={args.wait_ms}ms "
        f"concurrency={args.concurrency} decode={args.decode_pool}x{args.decode_workers} "
        f"cpus={os.cpu_count()} cuda={torch.cuda.is_available()}"
    )
    print(f"generating {args.rounds} × {n} images …", flush=True)
    all_rounds = [make_images(n, seed=r) for r in range(args.rounds)]
    results: list[Result] = []
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown model {name}; choose from {', '.join(MODELS)}")
        rounds = all_rounds
        if name == "clip-l14" and not gpu:
            rounds = [data[: max(8, n // 4)] for data in all_rounds]  # ViT-L on a CPU: slow
        print(f"{name}: engine and baseline on {len(rounds[0])} images per round …", flush=True)
        r = bench_model(name, args, rounds)
        results.append(r)
        print(
            f"  {r.name:9s} engine {r.engine_ips:9.1f} img/s   baseline {r.baseline_ips:8.1f} "
            f"img/s   ratio {r.ratio:5.2f}x   ({r.detail})",
            flush=True,
        )
    if not args.skip_pdq:
        entries = args.pdq_entries or (100_000 if args.quick else 1_000_000)
        for line in bench_pdq(entries, 2000 if not args.quick else 500):
            print(line, flush=True)
    print("\nsummary (images/s, bytes → verdict):")
    for r in results:
        line = f"  {r.name:9s} engine {r.engine_ips:9.1f}  baseline {r.baseline_ips:8.1f}"
        print(f"{line}  {r.ratio:5.2f}x")


if __name__ == "__main__":
    main()
