"""Zero-shot classification with a CLIP model: ``python -m mammo_interp.zeroshot --task mass``.

Each class is described by prompts (:mod:`mammo_interp.prompts`); an image goes to the class whose
text embedding is most similar, with calibrated probabilities (the learned logit scale, embedding or
score ensembles, class-vs-negation prompts: :mod:`mammo_interp.zero_shot_classifier`).

Levels: ``image`` (each view), ``breast`` (CC + MLO of one side) and ``exam`` (all views). Multi-view
embeddings average the image encoder features of the present views before the projection head
(MMG-CLIP eq. 3, the ``mean`` pooling of :class:`models.clip.MultiViewClipModel`). Targets: the
label encoders for malignancy/density/BI-RADS, the multi-hot ``findings`` entry for the finding tasks
(:data:`models.text.FINDING_TASKS`), the mass boxes' shape/margin for mass_shape/mass_margin; a
breast or exam is positive if any view is (BI-RADS: the maximum), and a shape, margin or density
counts only when its views agree. Unknown targets are left out.

Writes ``REPORT_DIR/{task}_{level}_{split}_{prompt set}`` tables (md, CSV, LaTeX: AUROC, macro-F1,
balanced accuracy, ECE with bootstrap 95 % CIs), a reliability diagram (PNG, PDF), per-item
predictions (CSV) and a JSON record of the config and numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import models  # noqa: F401 - runtime guard before torch/timm/transformers
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mammo_interp.calibration import (
    DEFAULT_BINS, ReliabilityBins, ece_estimate, plot_reliability, reliability_bins,
)
from mammo_interp.features import digest, file_fingerprint, load_or_compute, table_fingerprint
from mammo_interp.plotting import save_figure
from mammo_interp.prompts import TaskPrompts, load_prompt_sets, prompt_set_for
from mammo_interp.zero_shot_classifier import ENSEMBLE_NAMES, ENSEMBLES, ZeroShotClassifier
from models.checkpoints import check_input_size, clip_from_checkpoint
from models.cli import parse_command, run_main
from models.clip import ClipModel
from models.data import schema
from models.data.cache import PreprocessCache
from models.data.datasets import BreastDataset, ExamDataset, ImageDataset, collate
from models.data.default import cache_dir
from models.data.labels import BIRADS5, DENSITY, FINDINGS, IGNORE_INDEX, MALIGNANCY
from models.data.reading import ReadOptions, read_options_field
from models.data.sources import TEST, TRAIN, VALIDATION, load_splits, preprocess_cache
from models.default_model import checkpoint_field, checkpoint_name, open_checkpoint
from models.device import Precision, check_spelling, loader_options, module_device, resolve_device
from models.errors import check_choice
from models.io import atomic_write, save_json
from models.metrics import Estimate, classification_metrics
from models.report_tables import ci_frame, ci_long_frame, write_table
from models.run_options import (
    batch_size_field, device_field, n_boot_field, precision_field, progress_field, seed_field, threads_field,
    workers_field,
)
from models.text import FINDING_TASKS, ZERO_SHOT_TASKS, task_name

LEVELS = ("image", "breast", "exam")
SPLITS = (TRAIN, VALIDATION, TEST)
_ENCODED = {"malignancy": MALIGNANCY, "density": DENSITY, "birads": BIRADS5}
_ATTRIBUTES = {"mass_shape": schema.MASS_SHAPES, "mass_margin": schema.MASS_MARGINS}
_ANY_VIEW = (*FINDING_TASKS, "malignancy", "birads")  # breast/exam target: maximum over views


@dataclass(frozen=True)
class SplitConfig:
    """Which model encodes which split, at which level and size: what every split-level study
    (zero-shot, prompt ablation, embedding figures, report generation) shares."""

    level: str = field(default="image", metadata={"help": f"{LEVELS}: views, breasts or exams"})
    split: str = field(default=TEST, metadata={"help": f"split to use: {SPLITS}"})
    checkpoint: str | None = checkpoint_field()
    data: str | None = field(default=None, metadata={
        "help": "dataset folder (VinDr or RSNA layout); default: the embedded synthetic set"})
    reading: ReadOptions = read_options_field()
    text_encoder: str | None = field(default=None, metadata={
        "help": "local text-model folder, needed for Mammo-CLIP checkpoints"})
    image_size: tuple[int, ...] = field(default=(), metadata={
        "help": "input H W; default: the size the checkpoint was pretrained at"})
    batch_size: int = batch_size_field()
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    workers: int = workers_field()
    n_boot: int = n_boot_field()
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    seed: int = seed_field("validation split, bootstrap and sampling")
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        check_choice("level", self.level, LEVELS)
        check_choice("split", self.split, SPLITS)
        check_input_size(self.image_size)
        check_spelling(self.device, self.precision, self.workers)


@dataclass(frozen=True)
class ZeroShotConfig(SplitConfig):
    """One zero-shot evaluation: a task at one level on one split with one prompt set."""

    task: str = field(default="mass", metadata={
        "help": f"task: {ZERO_SHOT_TASKS}; findings also as --attribute spells them ('suspicious calcification')"})
    prompt_set: str | None = field(default=None, metadata={
        "help": "prompt set name; default: the first set of the prompt file covering the task"})
    prompt_file: str | None = field(default=None, metadata={
        "help": "prompt-set JSON (see mammo_interp.prompts); default: the packaged sets"})
    ensemble: str = field(default="embedding", metadata={
        "help": f"{ENSEMBLES}: average prompt embeddings, or average per-prompt probabilities"})
    use_logit_scale: bool = field(default=True, metadata={
        "help": "multiply cosines by the model's learned logit scale before the softmax"})
    n_bins: int = field(default=DEFAULT_BINS, metadata={"help": "equal-width calibration bins"})
    report_dir: str = field(default="reports/zeroshot", metadata={"help": "where outputs go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "task", task_name(self.task))  # --attribute's finding names work too
        check_choice("task", self.task, ZERO_SHOT_TASKS)
        check_choice("ensemble", self.ensemble, ENSEMBLES)


# --- images, levels, targets -----------------------------------------------------------------


@torch.no_grad()
def image_features(model: ClipModel, table: pd.DataFrame, cache: PreprocessCache, batch_size: int = 32,
                   progress: bool = True, workers: int = 0, precision: Precision | None = None) -> torch.Tensor:
    """Image-encoder features ``(N, F)`` of every row of ``table``, in order, computed on the
    model's device under ``precision``'s autocast (default float32; ``workers`` DataLoader processes
    decode the images) and returned as float32 on the CPU."""
    device = module_device(model)
    precision = precision or Precision(device, None)
    dataset = ImageDataset(table.reset_index(drop=True), cache=cache, labels={})
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, **loader_options(device, workers))
    parts = []
    for batch in tqdm(loader, desc="images", disable=not progress, leave=False):
        with precision.autocast():
            features = model.image_encoder(batch["image"].to(device, non_blocking=True))
        parts.append(features.float().cpu())
    return torch.cat(parts)


@dataclass(frozen=True)
class LevelEmbeddings:
    """Normalized embeddings ``(G, D)`` of the items of one level, with each item's table rows
    (views) and the side/view codes its prompts are filled with (None = any)."""

    level: str
    embeddings: torch.Tensor
    rows: tuple[tuple[int, ...], ...]
    sides: tuple[str | None, ...]
    views: tuple[str | None, ...]


def level_items(table: pd.DataFrame, level: str) -> list[tuple[tuple[int, ...], str | None, str | None]]:
    """(row positions, side, view) of each image, breast or exam of ``table`` (dataset grouping)."""
    table = table.reset_index(drop=True)
    if level == "image":
        return [((i,), _code(side, schema.LATERALITIES), _code(view, schema.VIEWS))
                for i, (side, view) in enumerate(zip(table["laterality"], table["view"]))]
    check_choice("level", level, LEVELS)
    grouped = (BreastDataset if level == "breast" else ExamDataset)(table, labels={})
    return [(tuple(i for i in members if i is not None),
             _code(key[1], schema.LATERALITIES) if level == "breast" else None, None)
            for key, members in grouped.groups]


def _code(value: Any, valid: tuple[str, ...]) -> str | None:
    return value if value in valid else None


@torch.no_grad()
def embed_level(model: ClipModel, table: pd.DataFrame, level: str, features: torch.Tensor) -> LevelEmbeddings:
    """Project ``features`` ``(N, F)`` (from :func:`image_features` on ``table``) at ``level``:
    multi-view items average their views' features first (MMG-CLIP eq. 3)."""
    items = level_items(table, level)
    pooled = torch.stack([features[list(rows)].mean(dim=0) for rows, _, _ in items])
    embeddings = model.project_image_features(pooled)
    rows, sides, views = zip(*items) if items else ((), (), ())
    return LevelEmbeddings(level, embeddings, tuple(rows), tuple(sides), tuple(views))


def row_classes(row: Any, task: str) -> set[int]:
    """Known class indices of one table row for ``task`` (empty when unknown)."""
    if task in _ENCODED:
        encoder = _ENCODED[task]
        index = encoder.encode(row[encoder.column])
        return set() if index == IGNORE_INDEX else {index}
    if task in FINDING_TASKS:
        value = FINDINGS.encode(row[FINDINGS.column])[FINDINGS.class_names.index(FINDING_TASKS[task])]
        return set() if value == IGNORE_INDEX else {int(value)}
    if task in _ATTRIBUTES:
        names = _ATTRIBUTES[task]
        boxes = row["boxes"] if isinstance(row["boxes"], (list, tuple)) else ()
        values = (getattr(box, task) for box in boxes if box.category == "Mass")
        return {names.index(v) for v in values if v in names}
    check_choice("zero-shot task", task, ZERO_SHOT_TASKS)
    raise AssertionError(f"zero-shot task {task!r} has no target rule")


def level_targets(table: pd.DataFrame, task: str, rows: Sequence[Sequence[int]]) -> np.ndarray:
    """``(G,)`` int64 targets of items made of table ``rows``; :data:`IGNORE_INDEX` where unknown.

    Finding tasks, malignancy and BI-RADS take the maximum over views; mass shape/margin and density
    need all known values of the item to agree.
    """
    table = table.reset_index(drop=True)
    per_row = [row_classes(row, task) for _, row in table.iterrows()]
    out = np.full(len(rows), IGNORE_INDEX, dtype=np.int64)
    for g, members in enumerate(rows):
        known = set().union(*(per_row[i] for i in members))
        if known and (task in _ANY_VIEW or len(known) == 1):
            out[g] = max(known)
    return out


# --- evaluation ------------------------------------------------------------------------------


def evaluate(targets: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0,
             n_bins: int = DEFAULT_BINS) -> dict[str, Estimate]:
    """AUROC (± std over classes), macro-F1, balanced accuracy and ECE with bootstrap 95 % CIs.

    ``targets`` ``(N,)`` class indices (IGNORE_INDEX rows dropped), ``probs`` ``(N, C)``.

    Raises:
        ValueError: no row with a known target.
    """
    keep = np.asarray(targets) != IGNORE_INDEX
    if not keep.any():
        raise ValueError("no item with a known target to evaluate")
    kind = "binary" if probs.shape[1] == 2 else "multiclass"
    metrics = classification_metrics(targets[keep], probs[keep], kind, n_boot=n_boot, seed=seed)
    metrics["ece"] = ece_estimate(targets[keep], probs[keep], n_bins, n_boot=n_boot, seed=seed)
    return metrics


@dataclass(frozen=True)
class EmbeddedSplit:
    """One split encoded once: the model, its checkpoint (as reports name it), the input size used, the split's
    table, image-encoder features ``(N, F)`` of its rows and the projected embeddings of its items
    at one level."""

    model: ClipModel
    checkpoint: str
    image_size: tuple[int, int]
    table: pd.DataFrame
    features: torch.Tensor
    embedded: LevelEmbeddings


def cached_image_features(model: ClipModel, checkpoint: str | Path, table: pd.DataFrame, cache: PreprocessCache,
                          batch_size: int = 32, progress: bool = True,
                          precision: Precision | None = None, workers: int = 0) -> torch.Tensor:
    """:func:`image_features` through a file cache keyed like FActOR's feature cache (checkpoint
    file, the split's rows, preprocessing, a mixed precision), so the split-level studies (zero-shot,
    prompt ablation, embeddings, reports) encode a split once between them; a corrupt file is recomputed."""
    precision = precision or Precision(module_device(model), None)
    key = {"checkpoint": file_fingerprint(checkpoint), "table": table_fingerprint(table),
           "preprocess": cache.config.to_dict(), **precision.cache_key()}

    def decode(payload: dict[str, Any]) -> torch.Tensor:
        if len(payload["features"]) != len(table):
            raise ValueError("cached features of another table")
        return payload["features"]

    return load_or_compute(cache_dir() / "embeddings" / f"image-features-{digest(key)}.pt",
                           lambda: image_features(model, table, cache, batch_size, progress, workers, precision),
                           lambda features: {"features": features}, decode)


def embed_split(config: SplitConfig) -> EmbeddedSplit:
    """Load the model (default: the default checkpoint), read the split and encode it at the level
    (image features cached between studies). The images are encoded on ``--device``; the model then
    returns to the CPU, where the cheap rest (projections, prompts, scores) runs."""
    checkpoint, payload, image_size = open_checkpoint(config.checkpoint, config.data, config.image_size,
                                                      config.progress, config.device, config.precision,
                                                      config.workers)
    model = clip_from_checkpoint(payload, str(checkpoint), config.text_encoder).eval()
    table = load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                        config.reading)[config.split]
    device = resolve_device(config.device)
    features = cached_image_features(model.to(device), checkpoint, table, preprocess_cache(image_size),
                                     config.batch_size, config.progress, Precision.resolve(config.precision, device),
                                     config.workers)
    model.cpu()
    return EmbeddedSplit(model, checkpoint_name(checkpoint), image_size, table, features,
                         embed_level(model, table, config.level, features))


@dataclass(frozen=True)
class ZeroShotRun:
    """Everything one evaluation produced: item targets ``(G,)``, probabilities ``(G, C)``."""

    metrics: dict[str, Estimate]
    targets: np.ndarray
    probs: np.ndarray
    reliability: ReliabilityBins
    logit_scale: float
    class_names: tuple[str, ...]


def run_zero_shot(model: ClipModel, table: pd.DataFrame, embedded: LevelEmbeddings, prompts: TaskPrompts,
                  ensemble: str = "embedding", use_logit_scale: bool = True, n_boot: int = 1000,
                  seed: int = 0, n_bins: int = DEFAULT_BINS) -> ZeroShotRun:
    """Classify ``embedded`` items of ``table`` with ``prompts`` and score them."""
    classifier = ZeroShotClassifier(model, prompts, ensemble, use_logit_scale)
    probs = classifier.predict(embedded.embeddings, embedded.sides, embedded.views)
    targets = level_targets(table, prompts.task, embedded.rows)
    metrics = evaluate(targets, probs, n_boot, seed, n_bins)
    keep = targets != IGNORE_INDEX
    return ZeroShotRun(metrics, targets, probs, reliability_bins(targets[keep], probs[keep], n_bins),
                       classifier.logit_scale, prompts.class_names)


def zeroshot(config: ZeroShotConfig) -> pd.DataFrame:
    """Run ``config``; writes tables, a reliability diagram, predictions and JSON; returns the table."""
    sets = load_prompt_sets(config.prompt_file)
    prompt_set = prompt_set_for(sets, config.task, config.prompt_set)
    split = embed_split(config)
    model, table, embedded, checkpoint = split.model, split.table, split.embedded, split.checkpoint
    run = run_zero_shot(model, table, embedded, prompt_set.tasks[config.task], config.ensemble,
                        config.use_logit_scale, config.n_boot, config.seed, config.n_bins)
    options = "" if config.ensemble == "embedding" else f"_{config.ensemble}"
    options += "" if config.use_logit_scale else "_noscale"
    stem = Path(config.report_dir) / f"{config.task}_{config.level}_{config.split}_{prompt_set.name}{options}"
    label = f"{prompt_set.name}, {config.ensemble} ensemble, logit scale {run.logit_scale:.3g}"
    known = int((run.targets != IGNORE_INDEX).sum())
    caption = (f"Zero-shot {config.task}, {config.level} level, {config.split} split ({known} items with "
               f"a known target); 95% bootstrap CIs ({config.n_boot} samples), ECE over {config.n_bins} "
               f"bins; checkpoint {checkpoint} at {split.image_size[0]}x{split.image_size[1]}")
    table_out = ci_frame({label: run.metrics}, row_label="prompts")
    write_table(table_out, stem, caption=caption, label=f"tab:zeroshot-{stem.name}")
    curve = f"{prompt_set.name} prompts, {ENSEMBLE_NAMES[config.ensemble]}" + ("" if config.use_logit_scale else ", no logit scale")
    save_figure(plot_reliability({curve: run.reliability}, f"{config.task}, {config.level} level"),
                stem.with_name(stem.name + "_reliability"))
    _save_predictions(stem.with_name(stem.name + "_predictions.csv"), table, embedded, run)
    save_json(stem.with_suffix(".json"), {
        "config": asdict(config), "checkpoint": checkpoint, "image_size": list(split.image_size),
        "prompt_set": prompt_set.name,
        "logit_scale": run.logit_scale, "items": len(run.targets), "known": known,
        "results": ci_long_frame({label: run.metrics}, row_label="prompts").to_dict(orient="records"),
    })
    return table_out


def _save_predictions(path: Path, table: pd.DataFrame, embedded: LevelEmbeddings, run: ZeroShotRun) -> None:
    ids = table["image_id"].astype(str).tolist()
    frame = pd.DataFrame({"image_ids": [" ".join(ids[i] for i in rows) for rows in embedded.rows],
                          "target": run.targets})
    frame[[f"p({name})" for name in run.class_names]] = run.probs
    atomic_write(path, lambda stream: stream.write(frame.to_csv(index=False).encode("utf-8")))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(
        ZeroShotConfig, argv, "python -m mammo_interp.zeroshot",
        "Zero-shot classification of one task with a CLIP checkpoint; writes markdown/CSV/LaTeX "
        "tables with bootstrap CIs and a reliability diagram to REPORT_DIR.",
    )
    table = zeroshot(config)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    run_main(main)
