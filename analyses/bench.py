"""Benchmarks (not tests): ``python -m analyses.bench`` writes ``reports/bench.md`` (+ CSV, JSON).

Each case runs in a fresh process, so its peak RSS is its own; figures that compare two ways of
doing one thing (cache vs none, FActOR vs bare forward, openTSNE vs scikit-learn) are measured back
to back in the same process and reported as ratios, which survive a noisy shared machine better
than absolute rates. Costs are also measured across image sizes and dataset sizes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import models  # noqa: F401  (runtime set-up first)
import numpy as np
import pandas as pd
import torch

from models.allocator import peak_rss_mb
from models.cli import parse_command, run_main
from models.io import save_json
from models.report_tables import write_table
from models.run_record import portable


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how much of it."""

    report_dir: str = field(default="reports", metadata={"help": "where bench.md/.csv/.tex/.json go"})
    heights: tuple[int, ...] = field(default=(256, 512, 1024), metadata={
        "help": "image heights for the size sweep (width = 0.625 x height)"})
    images: int = field(default=32, metadata={"help": "images per throughput measurement"})
    studies: tuple[int, ...] = field(default=(8, 32), metadata={
        "help": "dataset-size sweep: synthetic studies generated (4 images each)"})
    exams: int = field(default=2, metadata={"help": "4-view exams per per-view attribution measurement"})
    repeats: int = field(default=3, metadata={"help": "best of this many interleaved runs for each ratio"})
    tsne_points: tuple[int, ...] = field(default=(1000, 5000), metadata={
        "help": "t-SNE sizes (points x 512 dims)"})


def _timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_synthetic(studies: int) -> dict[str, Any]:
    """Generation rate, then decode + preprocess rate without a cache, into a cold cache and from a
    warm one, on the generated DICOMs."""
    from models.data.cache import PreprocessCache
    from models.data.preprocess import PreprocessConfig, load_preprocessed
    from models.data.synth import SynthConfig, generate_dataset
    from models.data.vindr import read_vindr

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        seconds = _timed(lambda: generate_dataset(root, SynthConfig(n_studies=studies, seed=0, image_height=512),
                                                  workers=1, progress=False))
        table = read_vindr(root)
        config = PreprocessConfig(size=(256, 160))
        cache = PreprocessCache(Path(tmp) / "cache", config)
        rows = list(zip(table["path"], table["laterality"]))
        plain = _timed(lambda: [load_preprocessed(p, config, side) for p, side in rows])
        cold = _timed(lambda: [cache.get(p, side) for p, side in rows])
        warm = _timed(lambda: [cache.get(p, side) for p, side in rows])
    n = len(rows)
    return {"studies_per_s": studies / seconds, "decode_images_per_s": n / plain,
            "cold_cache_images_per_s": n / cold, "warm_cache_images_per_s": n / warm,
            "warm_cache_speedup": plain / warm, "images": n}


def bench_embeddings(height: int, images: int) -> dict[str, Any]:
    """Image and text embedding throughput of the default encoders at one input size."""
    from models.clip import ClipConfig, ClipModel
    from models.text import attribute_sentences

    model = ClipModel(ClipConfig()).eval()
    batch = torch.rand(images, 1, height, int(round(0.625 * height)))
    sentences = attribute_sentences("mass")[:64]
    with torch.no_grad():
        model.encode_image(batch[:2])  # warm-up
        model.text_features(["warm-up"])
        image_s = _timed(lambda: [model.encode_image(batch[i:i + 16]) for i in range(0, images, 16)])
        text_s = _timed(lambda: model.text_features(sentences))  # first sight of each: encoded
    return {"height": height, "image_embeddings_per_s": images / image_s,
            "text_embeddings_per_s": len(sentences) / text_s}


def bench_factor(height: int, images: int, repeats: int = 3) -> dict[str, Any]:
    """FActOR box prediction vs a bare backbone forward (untrained mapper: same cost)."""
    from mammo_interp.box_timing import channel_method, time_box_prediction
    from mammo_interp.methods import MethodContext
    from mammo_interp.methods.channels import FACTOR
    from mammo_interp.features import breast_mask
    from mammo_interp.boxes import BoxRule
    from mammo_interp.mapper import ChannelMapper, MapperConfig
    from models.encoders import ImageEncoder

    encoder = ImageEncoder().eval()
    width = int(round(0.625 * height))
    batch = torch.rand(images, 1, height, width) * 0.5 + 0.25
    with torch.no_grad():
        maps = encoder.feature_map(batch[:1])
    mapper = ChannelMapper(int(np.prod(maps.shape[2:])), 512, MapperConfig().hidden).eval()
    masks = torch.from_numpy(np.stack([breast_mask(image[0].numpy()) for image in batch]))
    factor = channel_method(encoder, "head", FACTOR, MethodContext(text_embedding=torch.randn(512), mapper=mapper))
    result = time_box_prediction(encoder, factor, batch, masks, BoxRule(), batch_size=16, repeats=repeats)
    return {"height": height, "ratio": result["ratio"], "factor_images_per_s": result["boxes_images_per_s"],
            "bare_images_per_s": result["bare_images_per_s"]}


def bench_shapley(height: int, exams: int, repeats: int = 3) -> dict[str, Any]:
    """Exact per-view Shapley values (15 view subsets scored on features encoded once) and the
    naive alternative (re-encoding every subset) against one forward of the 4-view exam model."""
    from mammo_interp.box_timing import best_times
    from mammo_interp.per_view import ExamTarget, shapley_values, subset_values
    from models.clip import ClipConfig, ClipModel, MultiViewClipModel

    target = ExamTarget(MultiViewClipModel(ClipModel(ClipConfig())), torch.randn(512)).eval()
    images = torch.rand(exams, 4, 1, height, int(round(0.625 * height)))
    mask = torch.ones(exams, 4, dtype=torch.bool)
    subsets = torch.tensor([[bool(s >> v & 1) for v in range(4)] for s in range(1, 16)])

    def naive() -> None:
        for chosen in subsets:
            target(images, chosen.expand(exams, -1))

    with torch.no_grad():
        target(images, mask)  # warm-up at full size
        seconds = best_times({"forward": lambda: target(images, mask), "naive": naive,
                              "shapley": lambda: shapley_values(subset_values(target, images, mask), mask)}, repeats)
    return {"height": height, "exam_forward_s_per_exam": seconds["forward"] / exams,
            "shapley_over_forward": seconds["shapley"] / seconds["forward"],
            "naive_shapley_over_forward": seconds["naive"] / seconds["forward"]}


def bench_tsne(points: int) -> dict[str, Any]:
    """openTSNE against scikit-learn's t-SNE on the same clustered ``points x 512`` embeddings."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 512))
    data = (centres[rng.integers(8, size=points)] + 0.5 * rng.normal(size=(points, 512))).astype(np.float32)
    open_s = _timed(lambda: OpenTSNE(n_jobs=os.cpu_count(), random_state=0).fit(data))
    sk_s = _timed(lambda: SkTSNE(random_state=0, init="pca").fit_transform(data))
    return {"points": points, "opentsne_s": open_s, "sklearn_s": sk_s, "sklearn_over_opentsne": sk_s / open_s}


def _child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    result = function(*args)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def isolated(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one case in a fresh spawned process (its own peak RSS)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, function, *args).result()


def machine() -> str:
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}")


def run_bench(config: BenchConfig) -> pd.DataFrame:
    """Every case; one row per (case, measure)."""
    rows: list[dict[str, Any]] = []

    def add(case: str, result: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
        rows.extend({"case": case, "measure": k, "value": v} for k, v in result.items() if k not in skip)

    for studies in config.studies:
        add(f"synthetic data ({studies} studies, 512 px; decode to 256x160)", isolated(bench_synthetic, studies))
    for height in config.heights:
        add(f"default encoders, {config.images} images at {height} px", isolated(bench_embeddings, height, config.images),
            skip=("height",))
        add(f"FActOR boxes vs bare forward, {config.images} images at {height} px",
            isolated(bench_factor, height, config.images, config.repeats), skip=("height",))
        add(f"per-view Shapley vs exam forward, {config.exams} 4-view exams at {height} px",
            isolated(bench_shapley, height, config.exams, config.repeats), skip=("height",))
    for points in config.tsne_points:
        add(f"t-SNE, {points} x 512", isolated(bench_tsne, points), skip=("points",))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(BenchConfig, argv, "python -m analyses.bench",
                          "Throughput, ratios and peak memory of the main costs; writes REPORT_DIR/bench.md/.csv/.tex/.json.")
    frame = run_bench(config)
    shown = frame.assign(value=[f"{v:.3g}" if isinstance(v, float) else str(v) for v in frame["value"]])
    stem = Path(config.report_dir) / "bench"
    caption = f"Benchmarks on {machine()}; each case in a fresh process; ratios measured back to back."
    write_table(shown, stem, caption=caption, label="tab:bench")
    save_json(stem.with_suffix(".json"), {"machine": machine(), "config": portable(asdict(config)),
                                          "rows": frame.to_dict(orient="records")})
    print(shown.to_string(index=False))
    return frame


if __name__ == "__main__":
    run_main(main)
