"""The supervised reference: the CLIP image backbone trained box-free on image-level finding labels.

It answers "what can these features know?" before any explanation is judged: a CLIP model cannot be
expected to encode masses that the same backbone, told directly which images hold one, cannot
learn. Its Grad-CAM is the ceiling row of every localization table.

The head is a 1x1 convolution on a chosen feature map, giving a ``(B, K, h, w)`` logit map per
finding that is pooled to one logit per finding (``avg``: a linear layer on average-pooled features;
``max`` or ``lse``: the evidence of the most suspicious cell, which a lesion covering a few cells
needs). Boxes are never read: training sees image labels only.

``python -m models.reference`` trains with batches balanced between images with and without the
findings, light augmentation (flips, gamma, contrast), selects the epoch on the validation AUROC
of one finding (``--select-on``, default the first: Mass) or their mean (the test split is read once, at the
end) and writes ``OUT/best.pt``, ``OUT/last.pt`` (``--resume`` continues it), ``OUT/metrics.csv``
and test AUROC tables with bootstrap CIs. ``--ship-to models/weights`` also writes ``best.pt`` in
fp16 (no training state) with a card: the reference every localization table on the embedded set
then shows by default.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import models  # noqa: F401 - runtime guard before torchvision/transformers
from models.augment import augment
from models.cards import embedded_data, provenance
from models.checkpoints import CheckpointError, check_input_size, read_weights_file
from models.cli import parse_command, run_main
from models.data.check_set import CHECK_SET, check_set_table
from models.data.datasets import ImageDataset
from models.data.default import uses_embedded
from models.data.reading import ReadOptions, read_options_field
from models.data.schema import FINDING_CATEGORIES
from models.data.sources import TEST, load_splits, preprocess_cache
from models.device import Precision, check_spelling, loader_options, module_device, resolve_device
from models.encoders import ImageEncoder, ImageEncoderConfig
from models.encoders.image import LogSumExpPool
from models.errors import check_choice
from models.io import save_json, save_torch
from models.metrics import Estimate, auroc, bootstrap
from models.report_tables import ci_frame, ci_long_frame, write_table
from models.run_options import (
    device_field, n_boot_field, precision_field, progress_field, seed_field, threads_field, workers_field,
)
from models.run_record import portable
from models.sampling import balanced_order, finding_targets
from models.training import (MetricsHistory, channels_last, cosine_with_warmup, epoch_generator, optimizer_state,
                             restore_optimizer_state, seed_everything)

POOLINGS = ("avg", "max", "lse")
DEFAULT_FINDINGS = ("Mass", "Suspicious Calcification")
WEIGHTS_FILE = "reference.pt"
CARD_FILE = "reference.json"


@dataclass(frozen=True)
class ReferenceConfig:
    """One supervised-reference training run."""

    findings: tuple[str, ...] = field(default=DEFAULT_FINDINGS, metadata={
        "help": "finding categories to predict (VinDr names)"})
    data: str | None = field(default=None, metadata={
        "help": "dataset folder (VinDr or RSNA layout); default: the embedded synthetic set"})
    reading: ReadOptions = read_options_field()
    image_size: tuple[int, ...] = field(default=(256, 160), metadata={"help": "input H W"})
    feature_layer: str = field(default="head", metadata={
        "help": "feature map the head reads: 'head' (last conv) or a timm stage, e.g. 'blocks.4'"})
    pooling: str = field(default="lse", metadata={"help": f"logit-map pooling: {POOLINGS}"})
    frozen_through: str = field(default="blocks.1", metadata={
        "help": "backbone stages kept at their ImageNet weights, from the input through this one "
                "('' trains all; 'blocks.1' ends at stride 4 and saves most of the compute)"})
    select_on: str | None = field(default=None, metadata={
        "help": "validation AUROC that picks best.pt: a finding of FINDINGS, or 'mean' over them; "
                "default: the first finding"})
    epochs: int = field(default=8, metadata={"help": "epochs (each sees as many images as the training split)"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    positive_fraction: float = field(default=0.5, metadata={
        "help": "share of each batch drawn from images with a finding (balanced sampling)"})
    lr: float = field(default=1e-3, metadata={"help": "head learning rate"})
    encoder_lr: float = field(default=3e-4, metadata={"help": "backbone learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up"})
    augment: bool = field(default=True, metadata={"help": "flips, gamma and contrast jitter"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    workers: int = workers_field()
    n_boot: int = n_boot_field()
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    seed: int = seed_field()
    max_minutes: float | None = field(default=None, metadata={
        "help": "stop after this many minutes (the epoch in progress is evaluated and saved)"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/last.pt"})
    out: str = field(default="runs/reference", metadata={"help": "run folder"})
    report_dir: str = field(default="reports/reference", metadata={"help": "where tables go"})
    ship_to: str | None = field(default=None, metadata={
        "help": f"also write best.pt in fp16 as {WEIGHTS_FILE} with its card {CARD_FILE} into this folder "
                "(models/weights: the package's shipped reference; its test AUROCs are the shipped file's)"})
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        if not self.findings:
            raise ValueError(f"findings: none given; valid: {', '.join(FINDING_CATEGORIES)}")
        check_choice("findings", list(self.findings), FINDING_CATEGORIES)
        check_choice("pooling", self.pooling, POOLINGS)
        check_input_size(self.image_size)
        check_spelling(self.device, self.precision, self.workers)
        if self.select_on not in (None, "mean", *self.findings):
            raise ValueError(f"select_on {self.select_on!r} must be 'mean' or one of findings {list(self.findings)}")
        if not 0 < self.positive_fraction < 1:
            raise ValueError(f"positive_fraction must be in (0, 1), got {self.positive_fraction}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (paths as strings), so checkpoints load with ``weights_only=True``."""
        return json.loads(json.dumps(asdict(self), default=str))


class FindingClassifier(nn.Module):
    """Image encoder + 1x1-conv finding head; ``logit_map`` ``(B, K, h, w)``, ``forward`` ``(B, K)``."""

    def __init__(self, encoder: ImageEncoder, num_findings: int, feature_layer: str = "head",
                 pooling: str = "lse") -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        self.encoder, self.feature_layer, self.pooling = encoder, feature_layer, pooling
        self.head = nn.Conv2d(encoder.feature_channels(feature_layer), num_findings, kernel_size=1)
        self.lse = LogSumExpPool()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.feature_map(images, self.feature_layer)

    def logit_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_map(images))

    def pool(self, logit_map: torch.Tensor) -> torch.Tensor:
        if self.pooling == "lse":
            return self.lse(logit_map)
        flat = logit_map.flatten(2)
        return flat.mean(-1) if self.pooling == "avg" else flat.amax(-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.logit_map(images))


class _Images(Dataset):
    def __init__(self, images: ImageDataset, targets: np.ndarray) -> None:
        self.images, self.targets = images, torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index]["image"], self.targets[index]


@torch.no_grad()
def predict(model: FindingClassifier, data: Dataset, batch_size: int, progress: bool = False,
            desc: str = "predict", workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (N, K), targets (N, K))`` over ``data`` in order (on the model's device; ``workers``
    DataLoader processes decode the images)."""
    model.eval()
    device = module_device(model)
    scores, targets = [], []
    for images, target in tqdm(DataLoader(data, batch_size=batch_size, **loader_options(device, workers)), desc=desc,
                               disable=not progress, leave=False):
        scores.append(torch.sigmoid(model(images.to(device, non_blocking=True)).float()).cpu())
        targets.append(target)
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def per_finding_auroc(scores: np.ndarray, targets: np.ndarray, findings: tuple[str, ...]) -> dict[str, float]:
    return {f: auroc(targets[:, k], scores[:, k]) if 0 < targets[:, k].sum() < len(targets) else float("nan")
            for k, f in enumerate(findings)}


def build_model(config: ReferenceConfig, weights: str = "default") -> FindingClassifier:
    """The untrained reference: ImageNet backbone (``weights="none"`` when a checkpoint follows)."""
    encoder = ImageEncoder(ImageEncoderConfig(weights=weights, feature_layer=config.feature_layer,
                                              frozen_through=config.frozen_through))
    return FindingClassifier(encoder, len(config.findings), config.feature_layer, config.pooling)


def save_reference(path: str | Path, model: FindingClassifier, config: ReferenceConfig, **state: Any) -> Path:
    """Weights, config and any training ``state``, written atomically."""
    return save_torch(path, {"reference_config": config.to_dict(), "model": model.state_dict(), **state})


def read_reference(path: str | Path) -> dict[str, Any]:
    """A reference checkpoint's payload (weights, config, training state), read weights-only."""
    payload = read_weights_file(path)
    if not isinstance(payload, dict) or "reference_config" not in payload:
        raise CheckpointError(f"{path}: not a supervised-reference checkpoint (no 'reference_config')")
    return payload


def load_reference(path: str | Path) -> tuple[FindingClassifier, ReferenceConfig]:
    """The trained reference of a ``best.pt``/``last.pt`` (weights only) and its config."""
    payload = read_reference(path)
    values = dict(payload["reference_config"])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    values["reading"] = ReadOptions(**values.get("reading", {}))
    config = ReferenceConfig(**values)
    model = build_model(config, weights="none")
    model.load_state_dict(payload["model"])
    return model.eval(), config


def selection_column(config: ReferenceConfig) -> str:
    """The ``metrics.csv`` column whose maximum picks ``best.pt``."""
    return f"val_auroc_{config.select_on or config.findings[0]}"


def _summary(row: dict[str, Any], findings: tuple[str, ...]) -> str:
    aurocs = ", ".join(f"{f} {row[f'val_auroc_{f}']:.3f}" for f in findings)
    return (f"epoch {row['epoch'] + 1}: train loss {row['train_loss']:.4f}, val AUROC {aurocs}, "
            f"{row['train_images_per_s']:.1f} images/s")


def train_reference(config: ReferenceConfig) -> Path:
    """Train (or resume) the reference; returns ``OUT/best.pt`` (best ``select_on`` validation AUROC)."""
    device = resolve_device(config.device)
    precision = Precision.resolve(config.precision, device)
    seed_everything(config.seed)
    out = Path(config.out)
    splits = load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                         config.reading)
    cache = preprocess_cache(tuple(config.image_size))
    train_targets = finding_targets(splits.train, config.findings)
    train = _Images(ImageDataset(splits.train, cache=cache), train_targets)
    validation = _Images(ImageDataset(splits.validation, cache=cache),
                         finding_targets(splits.validation, config.findings))
    for part in (train, validation):
        part.images.fill_cache(progress=config.progress)
    model = channels_last(build_model(config)).to(device)
    scaler = precision.scaler()
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": config.encoder_lr},
         {"params": model.head.parameters(), "lr": config.lr}], weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = cosine_with_warmup(optimizer, round(config.warmup_fraction * total), total)
    history, start_epoch, best = MetricsHistory(out), 0, -math.inf
    if config.resume and (out / "last.pt").is_file():
        state = read_reference(out / "last.pt")
        model.load_state_dict(state["model"])
        restore_optimizer_state(state, optimizer, scheduler, scaler)
        history = MetricsHistory(out, state["history"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best"])
    save_json(out / "config.json", config.to_dict())
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        generator = epoch_generator(config.seed, epoch)
        order = balanced_order(train_targets, config.positive_fraction, steps_per_epoch * config.batch_size,
                               generator)
        loader = DataLoader(torch.utils.data.Subset(train, order), batch_size=config.batch_size,
                            **loader_options(device, config.workers))
        model.train()
        loss_sum, seen, epoch_started, out_of_time = 0.0, 0, time.perf_counter(), False
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
        for images, targets in bar:
            if config.augment:  # on the CPU, where the epoch's generator is
                images = augment(images, generator)
            images = channels_last(images.to(device, non_blocking=True))
            with precision.autocast():
                loss = F.binary_cross_entropy_with_logits(model(images).float(), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum, seen = loss_sum + float(loss.detach()) * len(images), seen + len(images)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
                out_of_time = True
                break
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                               "train_images_per_s": seen / (time.perf_counter() - epoch_started)}
        scores, targets = predict(model, validation, 2 * config.batch_size, config.progress, "validation",
                                  config.workers)
        aurocs = per_finding_auroc(scores, targets, config.findings)
        row.update({f"val_auroc_{f}": v for f, v in aurocs.items()})
        defined = [v for v in aurocs.values() if not math.isnan(v)]
        row["val_auroc_mean"] = float(np.mean(defined)) if defined else float("nan")
        history.append(row)
        value = row[selection_column(config)]
        # a validation split without positives gives NaN: keep the first epoch's weights as best.pt
        improved = (not math.isnan(value) and value > best) or not (out / "best.pt").is_file()
        best = value if improved and not math.isnan(value) else best
        state = {"epoch": epoch, "best": best, "history": history.rows,
                 **optimizer_state(optimizer, scheduler, scaler)}
        if improved:  # best.pt first, as in pretraining: a crash between the saves redoes the epoch
            save_reference(out / "best.pt", model, config, **state)
        save_reference(out / "last.pt", model, config, **state)
        if config.progress:
            tqdm.write(_summary(row, config.findings))
        if out_of_time:
            break
    return out / "best.pt"


def evaluate_reference(checkpoint: str | Path, config: ReferenceConfig) -> dict[str, Estimate]:
    """Test-split AUROC per finding, with bootstrap 95 % CIs, of a trained reference."""
    model, trained = load_reference(checkpoint)
    splits = load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                         config.reading)
    test = _Images(ImageDataset(splits[TEST], cache=preprocess_cache(tuple(trained.image_size))),
                   finding_targets(splits[TEST], trained.findings))
    test.images.fill_cache(progress=config.progress)
    scores, targets = predict(model.to(resolve_device(config.device)), test, 2 * config.batch_size,
                              config.progress, "test", config.workers)
    return {f"{f} AUROC": bootstrap(auroc, targets[:, k], scores[:, k], config.n_boot, config.seed)
            for k, f in enumerate(trained.findings)}


def shipped_reference() -> Path:
    """The packaged fp16 supervised reference (trained on the embedded default set)."""
    return Path(str(resources.files("models") / "weights" / WEIGHTS_FILE))


def shipped_reference_card() -> dict[str, Any]:
    return json.loads((resources.files("models") / "weights" / CARD_FILE).read_text())


def export_reference(checkpoint: str | Path, folder: str | Path) -> Path:
    """``checkpoint``'s weights in fp16 with its config (paths machine-free), no training state:
    ``FOLDER/reference.pt``."""
    model, config = load_reference(checkpoint)
    return save_torch(Path(folder) / WEIGHTS_FILE, {"reference_config": portable(config.to_dict()),
                                                    "model": model.half().state_dict()})


def finding_aurocs(checkpoint: str | Path, table: pd.DataFrame) -> dict[str, float]:
    """Per-finding AUROC (no CIs) of a reference on an image table."""
    model, trained = load_reference(checkpoint)
    data = _Images(ImageDataset(table, cache=preprocess_cache(tuple(trained.image_size))),
                   finding_targets(table, trained.findings))
    return per_finding_auroc(*predict(model, data, 32), trained.findings)


def reference_card(shipped: Path, config: ReferenceConfig, results: dict[str, Estimate]) -> dict[str, Any]:
    """The card of an exported reference: data, config, the kept epoch's validation row, the shipped
    file's test AUROCs, on the embedded set also on the check set (a test regenerates it in seconds
    and compares), and its provenance."""
    history = pd.read_csv(Path(config.out) / "metrics.csv")
    kept = history.loc[history[selection_column(config)].idxmax()]
    if uses_embedded(config.data):
        data = embedded_data()
        check = {"check": {"synthetic": CHECK_SET.to_dict(), "auroc": finding_aurocs(shipped, check_set_table())}}
    else:
        data, check = {"folder": portable(str(config.data))}, {}
    return {"model": "supervised reference (EfficientNet-Lite0, 1x1-conv finding head; image-level labels, no boxes)",
            "reference_config": portable(config.to_dict()), "data": data, "kept_epoch": int(kept["epoch"]) + 1,
            "epochs_trained": len(history),
            "validation": {k: float(v) for k, v in kept.items() if k.startswith("val_")},
            "test_auroc": {name: asdict(estimate) for name, estimate in results.items()}, **check,
            **provenance(shipped, "models.reference")}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(
        ReferenceConfig, argv, "python -m models.reference",
        "Train the supervised reference (the image backbone on image-level finding labels, no "
        "boxes) and write its test AUROC with bootstrap CIs to REPORT_DIR.",
    )
    best = train_reference(config)
    scored = export_reference(best, config.ship_to) if config.ship_to else best
    results = {"supervised reference": evaluate_reference(scored, config)}
    if config.ship_to:
        save_json(Path(config.ship_to) / CARD_FILE, reference_card(scored, config, results["supervised reference"]))
    stem = Path(config.report_dir) / "reference"
    table = ci_frame(results, row_label="model")
    write_table(table, stem,
                caption=f"Supervised reference ({config.pooling} pooling of a 1x1-conv head on "
                        f"{config.feature_layer}, {config.image_size[0]}x{config.image_size[1]}): "
                        f"test AUROC, 95% bootstrap CIs ({config.n_boot} samples)",
                label="tab:reference")
    save_json(Path(config.out) / "test.json", {"config": config.to_dict(), "results":
                                               ci_long_frame(results, row_label="model").to_dict(orient="records")})
    print(table.to_string(index=False))
    return table

if __name__ == "__main__":
    run_main(main)
