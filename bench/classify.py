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

It also measures, on one core:

- **decode + hash CPU** per 800×600 photo-like JPEG (40–120 KB): the content hashes
  (sha256 + MD5 + SHA-1 in one pass), decode, PDQ, the models' inputs — pictguard's
  pipeline and, in the same run, the previous one (full-size decode, 512-px frame,
  ``pdqhash`` on it);
- **PDQ index**: the previous exact index (faiss ``IndexBinaryFlat``) and the multi-index
  hashing one (:mod:`classify.pdq_index`) at 1M entries — build time, memory, lookups/s
  one query per call and in batches of 256, and misses against brute force on 10,000
  queries (bit-flipped copies at distance 0–31, real near-duplicate images, strangers);
- **video** (``--video``): generated H.264 MP4, VP9 WebM, HEVC MOV, H.264 MKV (640×360,
  10 s at 24 fps, a keyframe every 2 s) and GIF animations through the decoder —
  pictguard's sampling (keyframes + an even spread, ``classify.max_frames`` frames shrunk
  while converting) against decoding every frame — then through the engine, hash lists
  only and with NudeNet: videos/s and frames/s;
- **PDQ interoperability** (``--pdq-interop``, a few minutes): on 1,000 generated photos,
  screenshots, crops and re-encodes, the distance between pictguard's PDQ and the
  reference (``pdqhash`` on every pixel) for several frame sizes, and near-duplicate
  recall at radius 31.

Random CLIP weights are fine for throughput. Examples::

    python bench/classify.py --quick
    python bench/classify.py --skip-models --pdq-interop
    python bench/classify.py --skip-models --skip-decode --skip-pdq --video
    python bench/classify.py --device cuda --n 4096 --models clip-l14 --batch 256 \\
        --decode-pool process --decode-workers 14
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classify.base import ClassifyTables
from classify.engine import ClassifyEngine
from classify.hashing import pdq_distance, pdq_hash, sha256_hex
from classify.pdq_index import PdqHit, PdqIndex
from classify.settings import ClassifySettings, ClipSettings, NudenetSettings
from pipeline.state.memory import MemoryTable
from tests import media
from tests.classify import pdq_corpus

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


def _cpu_ms(function: Any, items: Sequence[Any], repeats: int = 5) -> float:
    """Median CPU ms (all threads of this process) per item over ``repeats`` passes."""
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        for item in items:
            function(item)
        runs.append((time.process_time() - started) * 1000 / len(items))
    return statistics.median(runs)


def _old_hash_path(data: bytes) -> tuple[str, int]:
    """The previous decode + PDQ: draft to ≥ 320 px on both sides (an 800×600 JPEG decodes
    at full size), RGB, a 512-px frame, ``pdqhash`` on it."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft(None, (320, 320))
        rgb = image.convert("RGB")
    rgb.thumbnail((512, 512), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return pdq_hash(np.asarray(rgb))


def bench_decode(n: int) -> list[str]:
    """CPU ms per 800×600 photo-like JPEG: hashes, decode, PDQ, model inputs; old and new."""
    from classify.decode import DecodeOptions, prepare, shrink_factor
    from classify.hashing import content_hashes, pdq_from_frame
    from classify.preprocess import CenterCrop, Letterbox

    data = [media.photo_jpeg(i, 800, 600) for i in range(n)]
    sizes = sorted(len(item) // 1024 for item in data)
    hash_only = DecodeOptions(max_frames=1)
    models = DecodeOptions(draft_size=320, preprocessors=(CenterCrop(224), Letterbox(320)))
    factor = shrink_factor(800, 600, hash_only)

    def decode_only(item: bytes) -> Image.Image:
        with Image.open(io.BytesIO(item)) as image:
            image.draft(None, (800 // factor, 600 // factor))
            return image.convert("RGB")

    frames = [decode_only(item) for item in data]
    lumas = [np.asarray(frame.convert("L")) for frame in frames]
    old_frames = [_old_frame(item) for item in data]
    new = {
        "content hashes (sha256+md5+sha1, one pass)": _cpu_ms(content_hashes, data),
        f"JPEG decode at 1/{factor}": _cpu_ms(decode_only, data),
        f"PDQ from the {frames[0].width}x{frames[0].height} frame": _cpu_ms(
            lambda luma: pdq_from_frame(luma, (800, 600), scale=factor), lumas
        ),
        "prepare(), hash-only (lookup_fast)": _cpu_ms(lambda d: prepare(d, hash_only), data),
        "content hashes + prepare(), hash-only": _cpu_ms(
            lambda d: (content_hashes(d), prepare(d, hash_only)), data
        ),
        "prepare() with CLIP-224 + NudeNet-320 inputs": _cpu_ms(lambda d: prepare(d, models), data),
    }
    old = {
        "sha256 alone": _cpu_ms(sha256_hex, data),
        "JPEG decode at full size": _cpu_ms(lambda d: _old_frame(d, shrink=False), data),
        "PDQ (pdqhash) on the 512x384 frame": _cpu_ms(
            lambda frame: pdq_hash(np.asarray(frame)), old_frames
        ),
        "decode + 512-px frame + PDQ": _cpu_ms(_old_hash_path, data),
        "sha256 + decode + 512-px frame + PDQ": _cpu_ms(
            lambda d: (sha256_hex(d), _old_hash_path(d)), data
        ),
    }
    lines = [
        f"decode + hash CPU, {n} photo-like 800x600 JPEGs ({sizes[0]}–{sizes[-1]} KB), "
        "ms per image (median of 5 passes, one thread):"
    ]
    lines += [f"  now    {name:48s} {ms:6.2f}" for name, ms in new.items()]
    lines += [f"  before {name:48s} {ms:6.2f}" for name, ms in old.items()]
    return lines


def _every_frame(data: bytes) -> int:
    """Decode every frame of a video at full size and convert it to RGB (what sampling
    every frame would cost); the number of frames."""
    import av

    count = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def make_videos(n: int) -> dict[str, list[bytes]]:
    """``n`` realistic videos per container (640×360, 10 s, 24 fps) and ``n`` GIFs."""
    from tests import media

    out: dict[str, list[bytes]] = {}
    for container in media.VIDEO_CONTAINERS:
        out[container] = [
            media.video(100 + i, 640, 360, seconds=10.0, fps=24, container=container)
            for i in range(n)
        ]
    out["gif"] = [media.animated_gif(200 + i, 480, 270, 48, 80) for i in range(n)]
    return out


def bench_video(n: int, args: argparse.Namespace, models: bool) -> list[str]:
    """Videos/s and frames/s: the decoder's sampling against every frame, then the engine."""
    from classify.decode import DecodeOptions, Prepared, prepare
    from classify.preprocess import CenterCrop, Letterbox

    videos = make_videos(n)
    options = DecodeOptions(preprocessors=(CenterCrop(224), Letterbox(320)))
    lines = [
        f"video decode, {n} per kind, one thread (wall ms per file; frames sampled of all; "
        "sampled frames/s; every frame decoded to RGB for comparison):"
    ]
    for kind, items in videos.items():
        started, cpu = time.perf_counter(), time.process_time()
        results = [prepare(item, options) for item in items]
        wall, used = time.perf_counter() - started, time.process_time() - cpu
        done = [r for r in results if isinstance(r, Prepared)]
        if len(done) != len(results):
            raise RuntimeError(f"{kind}: {results}")
        sampled = sum(len(r.frames) for r in done)
        total = sum(r.n_frames for r in done)
        line = (
            f"  {kind:5s} sampled {wall * 1000 / len(items):7.1f} ms/file "
            f"(CPU {used * 1000 / len(items):7.1f})  {sampled // len(items):3d} of "
            f"{total // len(items):4d} frames  {sampled / wall:7.1f} frames/s"
        )
        if kind != "gif":
            started = time.perf_counter()
            every = sum(_every_frame(item) for item in items)
            spent = time.perf_counter() - started
            line += (
                f"   every frame {spent * 1000 / len(items):7.1f} ms/file "
                f"({every / spent:6.1f} frames/s)"
            )
        lines.append(line)
    mixed = [item for items in videos.values() for item in items]
    classifier_sets = [["hashlist"]] + ([["hashlist", "nudenet"]] if models else [])
    for classifiers in classifier_sets:
        settings = ClassifySettings(
            classifiers=classifiers,
            max_batch=args.batch,
            max_wait_ms=args.wait_ms,
            decode_workers=args.decode_workers,
            decode_pool=args.decode_pool,
            verdict_cache=False,
            nudenet=NudenetSettings(device=args.device),
        )

        async def go(settings: ClassifySettings = settings) -> tuple[float, int]:
            engine = await start_engine(settings)
            try:
                started = time.perf_counter()
                found = await asyncio.gather(*(engine.evaluate(item) for item in mixed))
                spent = time.perf_counter() - started
            finally:
                await engine.stop()
            frames = sum(len(f.media.sampled) for f in found if f.media is not None)
            return spent, frames

        spent, frames = asyncio.run(go())
        lines.append(
            f"  engine [{'+'.join(classifiers)}] on {len(mixed)} files: "
            f"{len(mixed) / spent:6.2f} videos/s, {frames / spent:7.1f} frames/s "
            f"(decode {settings.decode_pool}x{settings.decode_workers})"
        )
    return lines


def _old_frame(data: bytes, shrink: bool = True) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.draft(None, (320, 320))
        rgb = image.convert("RGB")
    if shrink:
        rgb.thumbnail((512, 512), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb


class FlatPdqIndex:
    """The previous :class:`classify.pdq_index.PdqIndex`: faiss ``IndexBinaryFlat``
    (exact brute force) behind an id map, kept here to measure against."""

    def __init__(self) -> None:
        import faiss

        self._faiss = faiss
        self._index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(256))
        self._keys: dict[int, str] = {}

    def add_many(self, entries: list[tuple[str, str]]) -> None:
        codes = np.frombuffer(bytes.fromhex("".join(pdq for _, pdq in entries)), dtype=np.uint8)
        ids = np.arange(len(self._keys), len(self._keys) + len(entries), dtype=np.int64)
        self._index.add_with_ids(codes.reshape(len(entries), 32), ids)
        self._keys.update(zip(ids.tolist(), (key for key, _ in entries), strict=True))

    def search(self, pdq_hexes: list[str], max_distance: int) -> list[PdqHit | None]:
        queries = np.frombuffer(bytes.fromhex("".join(pdq_hexes)), dtype=np.uint8)
        distances, ids = self._index.search(queries.reshape(len(pdq_hexes), 32), 1)
        return [
            PdqHit(self._keys[int(i)], int(d)) if i >= 0 and d <= max_distance else None
            for d, i in zip(distances[:, 0], ids[:, 0], strict=True)
        ]


def _lookups(
    index: PdqIndex | FlatPdqIndex, single: list[str], batched: list[str]
) -> tuple[tuple[float, float], tuple[float, float], list[PdqHit | None]]:
    """Lookups per CPU second and per wall second, one query per call over ``single`` and
    in calls of 256 over ``batched`` (whose answers are returned). Per CPU second is what
    one core delivers whatever else shares the machine."""
    cpu, wall = time.process_time(), time.perf_counter()
    for query in single:
        index.search([query], 31)
    one = (len(single) / (time.process_time() - cpu), len(single) / (time.perf_counter() - wall))
    found: list[PdqHit | None] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(batched), 256):
        found += index.search(batched[start : start + 256], 31)
    many = (
        len(batched) / (time.process_time() - cpu),
        len(batched) / (time.perf_counter() - wall),
    )
    return one, many, found


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _flip_bits(code: np.ndarray, count: int, rng: np.random.Generator) -> str:
    bits = np.unpackbits(code)
    bits[rng.choice(256, size=count, replace=False)] ^= 1
    return np.packbits(bits).tobytes().hex()


def bench_pdq(entries: int, queries: int, originals: int) -> list[str]:
    """Flat (previous) and multi-index (current) PDQ indexes, one core, same data."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (entries, 32), dtype=np.uint8)
    pairs = [(f"k{i}", bytes(row).hex()) for i, row in enumerate(codes)]
    # Real near-duplicates: the originals are indexed, their copies are queries.
    sets = pdq_corpus.near_duplicate_hashes(
        [media.photo_jpeg(10_000 + i, 800, 600) for i in range(originals)], seed=3
    )
    pairs += [(f"img{i}", original) for i, (original, _) in enumerate(sets)]
    real = [copy for _, copies in sets for copy in copies]
    flips = queries - len(real) - queries // 5
    near = [
        _flip_bits(codes[int(i)], int(rng.integers(0, 32)), rng)
        for i in rng.integers(entries, size=flips)
    ]
    strangers = [bytes(row).hex() for row in rng.integers(0, 256, (queries // 5, 32), np.uint8)]
    probe = near + real + strangers
    lines = [
        f"PDQ index, {len(pairs):,} entries, one core, lookups per CPU second (and per wall "
        f"second); {len(probe):,} queries: {len(near):,} "
        f"copies with 0–31 bits flipped, {len(real)} real near-duplicate images, "
        f"{len(strangers):,} strangers"
    ]
    results: dict[str, list[PdqHit | None]] = {}
    for name, index in (("multi-index", PdqIndex()), ("flat (previous)", FlatPdqIndex())):
        gc.collect()
        rss, started = _rss_mib(), time.perf_counter()
        index.add_many(pairs)  # one call, as HashLists.start() loads a list
        build = time.perf_counter() - started
        gc.collect()
        memory = _rss_mib() - rss
        single_probe = probe if name == "multi-index" else probe[: min(len(probe), 2000)]
        single_probe = single_probe[:: max(1, len(single_probe) // 2000)]
        single, batched, found = _lookups(index, single_probe, probe)
        results[name] = found
        if isinstance(index, PdqIndex):
            tables = index._tables
            arrays = tables.codes.nbytes + tables.order.nbytes + tables.offsets.nbytes
        else:
            arrays = index._index.ntotal * (32 + 8)  # codes + id map
        lines.append(
            f"  {name:16s} build {build:5.1f} s  RSS +{memory:4.0f} MiB (arrays "
            f"{arrays / 2**20:4.0f} MiB)  "
            f"single {single[0]:7,.0f} ({single[1]:7,.0f} wall)  batched(256) "
            f"{batched[0]:7,.0f} ({batched[1]:7,.0f} wall)  "
            f"matches {sum(hit is not None for hit in found):,}"
        )
    truth, mine = results["flat (previous)"], results["multi-index"]
    missed = sum(
        t is not None and (m is None or m.distance != t.distance)
        for t, m in zip(truth, mine, strict=True)
    )
    extra = sum(t is None and m is not None for t, m in zip(truth, mine, strict=True))
    real_found = sum(hit is not None for hit in mine[len(near) : len(near) + len(real)])
    lines.append(
        f"  multi-index vs brute force: {missed} missed or farther, {extra} extra; "
        f"real near-duplicates found {real_found}/{len(real)}"
    )
    return lines


def bench_interop(n: int) -> list[str]:
    """pictguard's PDQ against the reference on ``n`` images, per frame size."""
    from classify.decode import DecodeOptions, prepare

    samples = list(pdq_corpus.corpus(n))
    references = [pdq_corpus.reference_pdq(sample.data) for sample in samples]
    jpeg = [media.photo_jpeg(70_000 + i, 800, 600) for i in range(40)]
    lines = [
        f"PDQ interoperability: {n} generated images ({', '.join(pdq_corpus.KINDS)}), "
        "Hamming distance to pdqhash on every pixel, per hash_size (the frame's least "
        "short side):"
    ]
    sizes = (64, 96, 128, 192, 256)
    options = tuple(DecodeOptions(max_frames=1, hash_size=size) for size in sizes)
    for size, option in zip(sizes, options, strict=True):
        distances = np.array(
            [
                pdq_distance(pdq_corpus.pictguard_pdq(sample.data, option), reference)
                for sample, reference in zip(samples, references, strict=True)
            ]
        )
        cpu = _cpu_ms(partial(prepare, options=option), jpeg, 3)
        histogram = " ".join(f"{d}:{c}" for d, c in enumerate(np.bincount(distances)) if c)
        worst = {
            kind: max(int(d) for d, s in zip(distances, samples, strict=True) if s.kind == kind)
            for kind in pdq_corpus.KINDS
        }
        default = " (default)" if size == DecodeOptions().hash_size else ""
        lines.append(
            f"  hash_size {size:3d}{default:10s} ≤10 bits {np.mean(distances <= 10):7.2%}  "
            f"p50 {np.median(distances):2.0f}  p90 {np.percentile(distances, 90):2.0f}  "
            f"p99 {np.percentile(distances, 99):2.0f}  max {distances.max():2d}  "
            f"800x600 JPEG decode+PDQ {cpu:.2f} ms CPU"
        )
        lines.append(f"      distances: {histogram}; worst per kind: {worst}")
    originals = [media.photo_jpeg(50_000 + i, *pdq_corpus.SIZES[i % 8]) for i in range(n // 10)]
    originals += [media.screenshot_png(60_000 + i, 800, 600) for i in range(n // 40)]
    recalls = pdq_corpus.near_duplicate_recall(originals, seed=1, options=options)
    lines.append(
        "  near-duplicates (resized, re-encoded, PNG, WebP, cropped ≤1 %, brighter, darker "
        f"of {len(originals)} images): {recalls[0].pairs} pairs, "
        f"{recalls[0].reference} matched at ≤31 by the reference hashes"
    )
    for size, recall in zip(sizes, recalls, strict=True):
        lines.append(
            f"  hash_size {size:3d}: matched by pictguard {recall.pictguard}, pictguard copy vs "
            f"reference original {recall.mixed}; lost where the reference matches: "
            f"{len(recall.lost)} {list(recall.lost)[:6]}"
        )
    return lines


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
    parser.add_argument("--skip-pdq", action="store_true", help="no PDQ index section")
    parser.add_argument("--skip-models", action="store_true", help="no model sections")
    parser.add_argument("--skip-decode", action="store_true", help="no decode CPU section")
    parser.add_argument("--pdq-queries", type=int, default=None, help="default 10,000")
    parser.add_argument(
        "--pdq-interop", action="store_true", help="PDQ vs the reference on --interop-n images"
    )
    parser.add_argument("--interop-n", type=int, default=1000)
    parser.add_argument("--video", action="store_true", help="video decode and engine section")
    parser.add_argument("--video-n", type=int, default=None, help="videos per kind (default 3)")
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
    if args.skip_models:
        names = []
    else:
        print(f"generating {args.rounds} × {n} images …", flush=True)
    all_rounds = [make_images(n, seed=r) for r in range(args.rounds)] if names else []
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
    if not args.skip_decode:
        for line in bench_decode(20 if args.quick else 60):
            print(line, flush=True)
    if not args.skip_pdq:
        entries = args.pdq_entries or (100_000 if args.quick else 1_000_000)
        queries = args.pdq_queries or (2000 if args.quick else 10_000)
        for line in bench_pdq(entries, queries, 20 if args.quick else 100):
            print(line, flush=True)
    if args.pdq_interop:
        for line in bench_interop(args.interop_n):
            print(line, flush=True)
    if args.video:
        print("generating videos …", flush=True)
        video_n = args.video_n or (1 if args.quick else 3)
        for line in bench_video(video_n, args, models=not args.skip_models):
            print(line, flush=True)
    if results:
        print("\nsummary (images/s, bytes → verdict):")
    for r in results:
        line = f"  {r.name:9s} engine {r.engine_ips:9.1f}  baseline {r.baseline_ips:8.1f}"
        print(f"{line}  {r.ratio:5.2f}x")


if __name__ == "__main__":
    main()
