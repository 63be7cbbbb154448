"""Linear probing and full fine-tuning of a pretrained image encoder: ``python -m models.finetune``.

Tasks are the dataset label encoders (malignancy, BI-RADS 5- and 3-class, density, finding
categories). Test-set metrics (AUROC, macro-F1, balanced accuracy) carry 1000-sample bootstrap 95 %
CIs; ``--fractions`` repeats the run on 10/20/50/100 % of the training studies (data efficiency)
and ``--folds k`` runs k-fold cross-validation over the training studies (MAM-CLIP's protocol):
fold *i* is evaluated, part of the other folds is the early-stopping validation, the rest trains.
Without ``--folds``, the test split is evaluated and the validation split stops training. Results
go to ``OUT/`` (per-run JSON) and ``REPORT_DIR/`` (markdown, CSV, LaTeX tables).

A linear probe extracts the frozen encoder's features once and trains only the head on them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

import models  # noqa: F401 - runtime guard before torchvision/transformers
from models.checkpoints import check_input_size, load_clip
from models.cli import parse_command, run_main
from models.data.datasets import ImageDataset, collate
from models.data.labels import DEFAULT_LABELS, IGNORE_INDEX, MultiHotEncoder
from models.data.reading import ReadOptions, read_options_field
from models.data.sources import TEST, TRAIN, VALIDATION, load_splits, preprocess_cache, subsample_studies
from models.data.tables import with_validation_split
from models.encoders import ImageEncoder, ImageEncoderConfig
from models.errors import check_choice
from models.io import save_json
from models.device import Precision, check_spelling, loader_options, module_device, resolve_device
from models.metrics import Estimate, classification_metrics
from models.report_tables import ci_frame, ci_long_frame, write_table
from models.run_options import (
    batch_size_field, device_field, n_boot_field, precision_field, progress_field, seed_field, threads_field,
    workers_field,
)
from models.training import EarlyStopping, epoch_generator, seed_everything

TASKS = tuple(DEFAULT_LABELS)
MODES = ("linear", "full")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning study (one task, one mode, several fractions/folds)."""

    task: str = field(default="malignancy", metadata={"help": f"label to predict: {TASKS}"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "pretrained CLIP checkpoint (ours or Mammo-CLIP); default: ImageNet encoder only"})
    text_encoder: str | None = field(default=None, metadata={
        "help": "local text-model folder, needed to import Mammo-CLIP checkpoints"})
    data: str | None = field(default=None, metadata={
        "help": "dataset folder (VinDr or RSNA layout); default: the embedded synthetic set"})
    reading: ReadOptions = read_options_field()
    mode: str = field(default="linear", metadata={"help": f"{MODES}: frozen-feature probe or full"})
    fractions: tuple[float, ...] = field(default=(1.0,), metadata={
        "help": "fractions of training studies, e.g. 0.1 0.2 0.5 1"})
    folds: int = field(default=0, metadata={"help": "k-fold cross-validation (0: fixed splits)"})
    image_size: tuple[int, ...] = field(default=(256, 160), metadata={"help": "input H W"})
    epochs: int = field(default=30, metadata={"help": "maximum epochs"})
    batch_size: int = batch_size_field()
    lr: float = field(default=1e-3, metadata={"help": "head learning rate"})
    encoder_lr: float = field(default=1e-4, metadata={"help": "encoder learning rate (mode full)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    patience: int = field(default=5, metadata={"help": "early-stopping patience (validation loss)"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    workers: int = workers_field()
    n_boot: int = n_boot_field()
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    seed: int = seed_field()
    out: str = field(default="runs/finetune", metadata={"help": "run folder"})
    report_dir: str = field(default="reports/finetune", metadata={"help": "where tables go"})
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("mode", self.mode, MODES)
        check_input_size(self.image_size, allow_empty=False)
        check_spelling(self.device, self.precision, self.workers)
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds must be 0 (fixed splits) or >= 2, got {self.folds}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions must be in (0, 1], got {self.fractions}")


def task_kind(task: str) -> str:
    """``binary``, ``multiclass`` or ``multilabel`` for a label encoder name."""
    encoder = DEFAULT_LABELS[task]
    if isinstance(encoder, MultiHotEncoder):
        return "multilabel"
    return "binary" if encoder.num_classes == 2 else "multiclass"


def task_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Cross-entropy (class indices, IGNORE_INDEX skipped) or BCE (multi-hot, ignored rows skipped)."""
    if kind == "multilabel":
        keep = (targets != IGNORE_INDEX).all(dim=1)
        if not keep.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[keep], targets[keep])
    if not (targets != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def probabilities(logits: torch.Tensor, kind: str) -> np.ndarray:
    return (torch.sigmoid(logits) if kind == "multilabel" else logits.softmax(dim=-1)).numpy()


class ImageClassifier(nn.Module):
    """Image encoder + linear head, trained end to end (``--mode full``)."""

    def __init__(self, encoder: ImageEncoder, num_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def load_encoder(checkpoint: str | None, text_encoder: str | None = None) -> ImageEncoder:
    """The pretrained CLIP image encoder, or the ImageNet default when no checkpoint is given
    (``text_encoder``: the local text-model folder a Mammo-CLIP import needs)."""
    if checkpoint is None:
        return ImageEncoder(ImageEncoderConfig())
    return load_clip(checkpoint, text_encoder).image_encoder


class _Targets(Dataset):
    """(image, target) pairs from an :class:`ImageDataset` item stream."""

    def __init__(self, images: ImageDataset, task: str) -> None:
        self.images, self.task = images, task

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.images[index]
        return item["image"], item[self.task]


FeatureMemo = dict[str, tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def extract_features(encoder: ImageEncoder, dataset: ImageDataset, task: str, batch_size: int,
                     memo: FeatureMemo, progress: bool = True, workers: int = 0) -> TensorDataset:
    """Frozen-encoder features and targets of every image of ``dataset``. Images already in
    ``memo`` (image id -> (feature, target)) are not encoded again, so the fractions and folds of
    a linear-probe study each cost no new forward passes. Encoded on the encoder's device (``workers``
    DataLoader processes decode the images); kept on the CPU as float32."""
    encoder.eval()
    device = module_device(encoder)
    table = dataset.table
    missing = dataset.table[~table["image_id"].astype(str).isin(memo)].reset_index(drop=True)
    if len(missing):
        subset = ImageDataset(missing, cache=dataset.cache, labels=dataset.labels)
        loader = DataLoader(subset, batch_size=batch_size, collate_fn=collate, **loader_options(device, workers))
        for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
            features = encoder(batch["image"].to(device, non_blocking=True)).float().cpu()
            memo.update(zip(batch["image_id"], zip(features, batch[task])))
    pairs = [memo[str(i)] for i in table["image_id"]]
    return TensorDataset(torch.stack([f for f, _ in pairs]), torch.stack([t for _, t in pairs]))


def _batches(data: Dataset, batch_size: int, generator: torch.Generator | None) -> Iterator[Any]:
    return iter(DataLoader(data, batch_size=batch_size, shuffle=generator is not None, generator=generator))


def fit(model: nn.Module, train: Dataset, validation: Dataset, kind: str, config: FinetuneConfig,
        parameter_groups: list[dict[str, Any]]) -> nn.Module:
    """Train with AdamW and early stopping on validation loss; returns the best-epoch weights.
    Batches go to the model's device, at ``config.precision``."""
    device = module_device(model)
    precision = Precision.resolve(config.precision, device)
    scaler = precision.scaler()
    optimizer = torch.optim.AdamW(parameter_groups, weight_decay=config.weight_decay)
    stopper = EarlyStopping(patience=config.patience, mode="min")
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(config.epochs):
        model.train()
        for inputs, targets in _batches(train, config.batch_size, epoch_generator(config.seed, epoch)):
            with precision.autocast():
                loss = task_loss(model(inputs.to(device)).float(), targets.to(device), kind)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        logits, targets = predict(model, validation, config.batch_size)
        if stopper.step(float(task_loss(logits, targets, kind)), epoch):
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if stopper.should_stop:
            break
    model.load_state_dict(best_state)
    return model


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` float32 logits (on the CPU, from the model's device) and the targets."""
    model.eval()
    device = module_device(model)
    logits, targets = [], []
    for inputs, target in _batches(data, batch_size, None):
        logits.append(model(inputs.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def _fold_tables(pool: pd.DataFrame, folds: int, validation_fraction: float,
                 seed: int) -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """(fold, train, validation, evaluation) tables of k-fold CV over ``pool``'s studies: fold *k*
    is evaluated; ``validation_fraction`` of the other folds' studies stops training."""
    studies = np.array(sorted(set(pool["study_id"])))
    assignment = np.random.default_rng(seed).permutation(len(studies)) % folds
    fold = pool["study_id"].map(dict(zip(studies, assignment)))
    for k in range(folds):
        rest = with_validation_split(pool[fold != k].assign(split=TRAIN), validation_fraction, seed)
        yield (k, rest[rest["split"] == TRAIN], rest[rest["split"] == VALIDATION], pool[fold == k])


def run_one(config: FinetuneConfig, encoder: ImageEncoder, memo: FeatureMemo, train: pd.DataFrame,
            validation: pd.DataFrame, evaluation: pd.DataFrame) -> dict[str, Estimate]:
    """Train on ``train`` (stopping on ``validation``) and score ``evaluation``.

    ``encoder`` is shared by the runs of a study: a linear probe only reads it (through ``memo``),
    full fine-tuning trains a copy.
    """
    seed_everything(config.seed)
    kind = task_kind(config.task)
    cache = preprocess_cache(tuple(config.image_size))
    datasets = [ImageDataset(t.reset_index(drop=True), cache=cache) for t in (train, validation, evaluation)]
    num_outputs = DEFAULT_LABELS[config.task].num_classes
    if config.mode == "linear":
        parts = [extract_features(encoder, d, config.task, config.batch_size, memo, config.progress, config.workers)
                 for d in datasets]
        head = nn.Linear(encoder.out_dim, num_outputs).to(module_device(encoder))
        fit(head, parts[0], parts[1], kind, config, [{"params": head.parameters(), "lr": config.lr}])
        logits, targets = predict(head, parts[2], config.batch_size)
    else:
        classifier = ImageClassifier(copy.deepcopy(encoder), num_outputs).to(module_device(encoder))
        parts = [_Targets(d, config.task) for d in datasets]
        groups = [{"params": classifier.encoder.parameters(), "lr": config.encoder_lr},
                  {"params": classifier.head.parameters(), "lr": config.lr}]
        fit(classifier, parts[0], parts[1], kind, config, groups)
        logits, targets = predict(classifier, parts[2], config.batch_size)
    return classification_metrics(targets.numpy(), probabilities(logits, kind), kind,
                                  n_boot=config.n_boot, seed=config.seed)


def finetune(config: FinetuneConfig) -> pd.DataFrame:
    """Run every (fraction, fold) of ``config``; writes and returns the results table."""
    splits = load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                         config.reading)
    encoder = load_encoder(config.checkpoint, config.text_encoder).to(resolve_device(config.device))
    memo: FeatureMemo = {}
    results: dict[str, dict[str, Estimate]] = {}
    runs = []
    for fraction in config.fractions:
        if config.folds:
            pool = pd.concat([splits.train, splits.validation], ignore_index=True)
            for fold, train, validation, evaluation in _fold_tables(pool, config.folds, config.validation_fraction, config.seed):
                runs.append((f"{fraction:g} fold {fold}", fraction, train, validation, evaluation))
        else:
            runs.append((f"{fraction:g}", fraction, splits.train, splits.validation, splits[TEST]))
    for name, fraction, train, validation, evaluation in tqdm(runs, desc=f"{config.task} runs",
                                                            disable=not config.progress):
        train = subsample_studies(train, fraction, config.seed)
        results[name] = run_one(config, encoder, memo, train, validation, evaluation)
    stem = f"{config.task}_{config.mode}"
    caption = (f"{config.task} ({config.mode} {'probe' if config.mode == 'linear' else 'fine-tuning'}), "
               f"{'held-out folds' if config.folds else 'test split'}; 95% bootstrap CIs "
               f"({config.n_boot} samples); checkpoint {config.checkpoint or 'ImageNet encoder'}")
    table = ci_frame(results, row_label="training fraction")
    write_table(table, Path(config.report_dir) / stem, caption=caption, label=f"tab:finetune-{stem}")
    long = ci_long_frame(results, row_label="training fraction")
    save_json(Path(config.out) / f"{stem}.json", {"config": asdict(config),
                                                  "results": long.to_dict(orient="records")})
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(
        FinetuneConfig, argv, "python -m models.finetune",
        "Linear probe or full fine-tuning of a CLIP image encoder on one label; writes "
        "markdown/CSV/LaTeX tables with bootstrap CIs to REPORT_DIR.",
    )
    table = finetune(config)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    run_main(main)
