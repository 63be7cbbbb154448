"""Contrastive pretraining of a mammography CLIP model: ``python -m models.pretrain``.

Pairs each image (or breast, or exam) with text, either synthesized from its labels (MMG-CLIP's
"prompts", Mammo-CLIP's label-to-report augmentation) or the dataset's reports, and trains with
symmetric InfoNCE, optionally Mammo-CLIP's multi-view terms and MAM-CLIP's masked-language term.
Early stopping watches the validation split only; the test split is never read here.

Every epoch writes ``last.pt`` (and ``best.pt`` on a new best validation loss) atomically, plus
``metrics.csv``/``metrics.jsonl`` (with validation retrieval and zero-shot finding AUROCs); ``--resume`` continues from ``last.pt`` and reproduces the
uninterrupted run. ``torchrun --nproc-per-node N -m models.pretrain ...`` trains data-parallel with
the gloo backend (CPU); contrastive negatives are then each process's local batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

import models  # noqa: F401 - runtime guard before torchvision/transformers
from models.allocator import peak_rss_mb
from models.checkpoints import check_input_size, load_checkpoint, restore_clip_state, save_checkpoint
from models.cli import parse_command, run_main
from models.clip import ClipConfig, ClipModel, MultiViewClipModel
from models.data.datasets import BreastDataset, ExamDataset, ImageDataset, collate
from models.data.reading import ReadOptions, read_options_field
from models.data.sources import Splits, load_splits, preprocess_cache, subsample_studies
from models.errors import check_choice
from models.fusion import FusionMLMHead
from models.io import save_json
from models.paired_text import PairedText, validation_zero_shot
from models.losses import clip_loss, mask_tokens, mlm_loss, multiview_loss, positives_from_texts
from models.retrieval_metrics import chance_recall_at_k, mean_reciprocal_rank, recall_at_k
from models.augment import augment
from models.data.schema import FINDING_CATEGORIES
from models.device import Precision, check_spelling, loader_options, module_device, resolve_device, to_device
from models.run_options import device_field, precision_field, progress_field, seed_field, threads_field, workers_field
from models.sampling import balanced_order
from models.training import (
    DistributedContext,
    EarlyStopping,
    MetricsHistory,
    all_reduce_mean,
    channels_last,
    cosine_with_warmup,
    epoch_generator,
    gather_batches,
    init_distributed,
    optimizer_state,
    restore_optimizer_state,
    seed_everything,
)

LEVELS = ("image", "breast", "exam")
TEXT_SOURCES = ("prompts", "reports", "both")
LOSSES = ("infonce", "multiview")


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run; saved beside its checkpoints."""

    data: str | None = field(default=None, metadata={
        "help": "dataset folder (VinDr or RSNA layout); default: the embedded synthetic set"})
    reading: ReadOptions = read_options_field()
    out: str = field(default="runs/pretrain", metadata={"help": "output folder"})
    model: ClipConfig = field(default_factory=ClipConfig, metadata={"help": "model architecture"})
    level: str = field(default="image", metadata={"help": f"what one sample is: {LEVELS}"})
    text_source: str = field(default="prompts", metadata={
        "help": f"{TEXT_SOURCES}: label-synthesized text, dataset reports, or a random mix"})
    loss: str = field(default="infonce", metadata={
        "help": f"{LOSSES}; multiview (Mammo-CLIP) needs level=breast"})
    global_negatives: bool = field(default=True, metadata={
        "help": "with torchrun, contrast against every process's batch (CLIP's global negatives; "
                "gradients as one process on the whole batch); off: each process's own batch"})
    mlm_weight: float = field(default=0.0, metadata={
        "help": "weight of the masked-language term through a fusion head (MAM-CLIP: 0.5); image level"})
    image_size: tuple[int, ...] = field(default=(256, 160), metadata={"help": "input H W"})
    epochs: int = field(default=30, metadata={"help": "maximum epochs"})
    batch_size: int = field(default=32, metadata={"help": "samples per step and process"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the encoders"})
    head_lr: float = field(default=1e-3, metadata={
        "help": "learning rate of the new layers (projections, temperature, pooling, fusion)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.1, metadata={"help": "share of steps for LR warm-up"})
    patience: int = field(default=5, metadata={"help": "early-stopping patience (validation loss)"})
    accumulate: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    train_fraction: float = field(default=1.0, metadata={
        "help": "fraction of training studies used (data-efficiency runs)"})
    positive_fraction: float = field(default=0.0, metadata={
        "help": "share of each epoch drawn from samples with a BALANCE_FINDINGS finding (balanced "
                "sampling with replacement); 0: plain shuffling"})
    balance_findings: tuple[str, ...] = field(default=("Mass", "Suspicious Calcification"), metadata={
        "help": "finding categories balanced sampling draws equally often"})
    augment: bool = field(default=False, metadata={"help": "flips, gamma and contrast jitter of training images"})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last convolutions: about 1.7x faster training on CPU, other rounding"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "stop after this much training time (the epoch in progress is closed)"})
    seed: int = seed_field()
    workers: int = workers_field()
    resume: bool = field(default=False, metadata={"help": "continue from OUT/last.pt"})
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        check_choice("level", self.level, LEVELS)
        check_choice("text_source", self.text_source, TEXT_SOURCES)
        check_choice("loss", self.loss, LOSSES)
        if self.loss == "multiview" and self.level != "breast":
            raise ValueError("loss 'multiview' pairs the CC and MLO views of a breast: use level 'breast'")
        if self.mlm_weight > 0 and self.level != "image":
            raise ValueError("the masked-language term is implemented for level 'image' only")
        check_input_size(self.image_size, allow_empty=False)
        check_spelling(self.device, self.precision, self.workers)
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 <= self.positive_fraction < 1:
            raise ValueError(f"positive_fraction must be in [0, 1), got {self.positive_fraction}")
        check_choice("balance_findings", list(self.balance_findings), FINDING_CATEGORIES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_dataset(config: PretrainConfig, table: pd.DataFrame) -> PairedText:
    cache = preprocess_cache(tuple(config.image_size))
    kind = {"image": ImageDataset, "breast": BreastDataset, "exam": ExamDataset}[config.level]
    return PairedText(kind(table, cache=cache), config.text_source, config.seed)


class PretrainObjective(nn.Module):
    """The model plus whatever the loss needs beyond it (view pooling, MLM fusion head).

    ``forward(batch)`` returns the named loss terms and their weighted ``total``, so one module can
    be wrapped by DistributedDataParallel.
    """

    def __init__(self, clip: ClipModel, config: PretrainConfig) -> None:
        super().__init__()
        self.clip, self.config = clip, config
        self.multiview = MultiViewClipModel(clip) if config.level != "image" else None
        self.fusion = (
            FusionMLMHead(clip.text_encoder.out_dim, clip.image_encoder.out_dim,
                          clip.text_encoder.tokenizer.vocab_size)
            if config.mlm_weight > 0 else None
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trained modules outside the CLIP model, saved separately in checkpoints."""
        return {name: module for name, module in (("multiview", self.multiview), ("fusion", self.fusion))
                if module is not None}

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Image-side embeddings of a batch at the configured level."""
        if self.multiview is not None:
            return self.multiview.encode_views(batch["image"], batch["mask"])
        return {"image_embeddings": self.clip.encode_image(batch["image"])}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts = batch["text"]
        scale = self.clip.logit_scale()
        terms: dict[str, torch.Tensor] = {}
        if self.fusion is not None:
            head_map = self.clip.image_encoder.forward_head_map(batch["image"])
            image = self.clip.project_image_features(self.clip.image_encoder.pool_map(head_map))
            terms["mlm"] = self._mlm(texts, head_map)
        else:
            image_side = self.embed(batch)
            image = image_side["image_embeddings"]
        text = self.clip.encode_text(texts)
        if self.config.loss == "multiview":
            views = image_side["view_embeddings"]
            mask = batch["mask"]
            first = torch.where(mask[:, :1], views[:, 0], image)
            second = torch.where(mask[:, 1:2], views[:, 1], image)
            (first, second, text, text2), keys = self._global(
                (first, second, text, self.clip.encode_text(batch["text2"])), batch["text_key"])
            parts = multiview_loss(first, second, text, text2, scale, positives=positives_from_texts(keys))
            terms.update({k: v for k, v in parts.items() if k != "total"})
            terms["contrastive"] = parts["total"]
        else:
            (image, text), keys = self._global((image, text), batch["text_key"])
            terms["contrastive"] = clip_loss(image, text, scale, positives_from_texts(keys))
        terms["total"] = terms["contrastive"] + self.config.mlm_weight * terms.get("mlm", 0.0)
        return terms

    def _global(self, tensors: tuple[torch.Tensor, ...], keys: Sequence[str]) -> tuple[list[torch.Tensor], list[str]]:
        """The contrastive terms' inputs over every process's batch (``--global-negatives``)."""
        return gather_batches(tensors, keys) if self.config.global_negatives else (list(tensors), list(keys))

    def _mlm(self, texts: Sequence[str], head_map: torch.Tensor) -> torch.Tensor:
        encoder = self.clip.text_encoder
        tokens = {key: value.to(head_map.device) for key, value in encoder.tokenize(texts).items()}
        masked, labels = mask_tokens(
            tokens["input_ids"], tokens["attention_mask"], encoder.tokenizer.all_special_ids,
            encoder.tokenizer.mask_token_id, encoder.tokenizer.vocab_size,
        )
        hidden = encoder.token_states(masked, tokens["attention_mask"])
        image_tokens = head_map.flatten(2).transpose(1, 2)
        return mlm_loss(self.fusion(hidden, tokens["attention_mask"], image_tokens), labels)


def _loader(dataset: PairedText, config: PretrainConfig, epoch: int, context: DistributedContext,
            train: bool, device: torch.device = torch.device("cpu")) -> DataLoader:
    dataset.epoch = epoch if train else None
    options = loader_options(device, config.workers)
    if not train:
        return DataLoader(dataset, batch_size=config.batch_size, shuffle=False, collate_fn=collate, **options)
    if config.positive_fraction > 0:
        # one balanced order for all ranks (same generator), split evenly so ranks step together
        order = balanced_order(dataset.finding_targets(config.balance_findings), config.positive_fraction,
                               len(dataset), epoch_generator(config.seed, epoch))
        sampler = order[:len(order) - len(order) % context.world_size][context.rank::context.world_size]
    elif context.enabled:
        sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True,
                                     seed=config.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=epoch_generator(config.seed, epoch))
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                      drop_last=len(dataset) > config.batch_size, **options)


@torch.no_grad()
def evaluate_retrieval(objective: PretrainObjective, dataset: PairedText, config: PretrainConfig) -> dict[str, float]:
    """Validation loss (InfoNCE over the whole split, identical texts as positives) and
    image->text recall@1/5 against the split's distinct canonical texts, with chance levels
    (computed on the model's device, in float32)."""
    objective.eval()
    device = module_device(objective)
    images, texts = [], []
    started = time.perf_counter()
    for batch in _loader(dataset, config, 0, DistributedContext(), train=False, device=device):
        images.append(objective.embed(to_device(batch, device))["image_embeddings"])
        texts.extend(batch["text"])
    seconds = time.perf_counter() - started
    image = torch.cat(images)
    distinct = sorted(set(texts))
    distinct_embeddings = objective.clip.encode_text(distinct)  # each distinct text encoded once
    row_of = {t: i for i, t in enumerate(distinct)}
    text = distinct_embeddings[[row_of[t] for t in texts]]
    loss = clip_loss(image, text, objective.clip.logit_scale(), positives_from_texts(texts))
    similarity = (image @ distinct_embeddings.T).cpu().numpy()
    relevant = np.array([[t == d for d in distinct] for t in texts])
    return {
        **validation_zero_shot(objective.clip, image, dataset),
        "val_loss": float(loss),
        "val_r1": recall_at_k(similarity, relevant, 1),
        "val_r5": recall_at_k(similarity, relevant, 5),
        "val_mrr": mean_reciprocal_rank(similarity, relevant),
        "val_r1_chance": chance_recall_at_k(relevant, 1),
        "val_r5_chance": chance_recall_at_k(relevant, 5),
        "val_distinct_texts": len(distinct),
        "embed_samples_per_s": len(texts) / max(seconds, 1e-9),
    }


def _optimizer(objective: PretrainObjective, config: PretrainConfig) -> torch.optim.AdamW:
    encoders = [p for m in (objective.clip.image_encoder, objective.clip.text_encoder)
                for p in m.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoders}
    heads = [p for p in objective.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [g for g in ({"params": encoders, "lr": config.lr}, {"params": heads, "lr": config.head_lr})
              if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def pretrain(config: PretrainConfig, splits: Splits | None = None) -> Path:
    """Run (or resume) pretraining; returns the path of the best checkpoint (``OUT/best.pt``).
    Under ``torchrun`` on CUDA each process takes the GPU of its ``LOCAL_RANK``."""
    device = resolve_device(config.device)
    context = init_distributed(device)
    device = context.device(device)
    precision = Precision.resolve(config.precision, device)
    seed_everything(config.seed)
    out = Path(config.out)
    splits = splits or load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                                   config.reading)
    train_set = build_dataset(config, subsample_studies(splits.train, config.train_fraction, config.seed))
    val_set = build_dataset(config, splits.validation)
    clip = ClipModel(config.model)
    if config.channels_last:
        channels_last(clip.image_encoder)
    objective = PretrainObjective(clip, config).to(device)
    optimizer = _optimizer(objective, config)
    scaler = precision.scaler()
    steps_per_epoch = max(1, len(_loader(train_set, config, 0, context, True)) // config.accumulate)
    total_steps = steps_per_epoch * config.epochs
    scheduler = cosine_with_warmup(optimizer, round(config.warmup_fraction * total_steps), total_steps)
    stopper = EarlyStopping(patience=config.patience, mode="min")
    history = MetricsHistory(out)
    start_epoch = 0
    if config.resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        restore_clip_state(clip, state["model"])
        for name, module in objective.extra_modules().items():
            module.load_state_dict(state["extra_modules"][name])
        restore_optimizer_state(state, optimizer, scheduler, scaler)
        stopper.load_state_dict(state["early_stopping"])
        history = MetricsHistory(out, state["history"])
        start_epoch = int(state["epoch"]) + 1
    if context.is_main:
        save_json(out / "config.json", config.to_dict())
    if context.enabled:
        model = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = objective
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stopper.should_stop:
            break
        objective.train()
        loader = _loader(train_set, config, epoch, context, train=True, device=device)
        sums: dict[str, float] = {}
        samples, epoch_started = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and context.is_main), leave=False)
        out_of_time = False
        jitter = epoch_generator(config.seed + 1, epoch, context.rank)
        for step, batch in enumerate(bar):
            if config.augment:  # on the CPU, where the epoch's generator is
                batch["image"] = augment(batch["image"], jitter)
            batch = to_device(batch, device)
            if config.channels_last and batch["image"].dim() == 4:  # views of multi-view batches stay 5-d
                batch["image"] = channels_last(batch["image"])
            with precision.autocast():
                terms = model(batch)
            scaler.scale(terms["total"] / config.accumulate).backward()
            if (step + 1) % config.accumulate == 0 or step + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(batch["text"])
            samples += len(batch["text"])
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
            if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
                out_of_time = True
                break
        train_seconds = time.perf_counter() - epoch_started
        row = {"epoch": epoch, **{f"train_{k}": all_reduce_mean(v / max(samples, 1), context)
                                  for k, v in sums.items()}}
        row["train_samples_per_s"] = all_reduce_mean(samples / train_seconds, context) * context.world_size
        row.update(evaluate_retrieval(objective, val_set, config))
        row["logit_scale"] = float(clip.logit_scale().detach())
        row["lr"] = scheduler.get_last_lr()[0]
        row["peak_rss_mb"] = peak_rss_mb()
        improved = stopper.step(row["val_loss"], epoch)
        if context.is_main:
            history.append(row)
            state = {
                "pretrain_config": config.to_dict(), "epoch": epoch, "history": history.rows,
                **optimizer_state(optimizer, scheduler, scaler), "early_stopping": stopper.state_dict(),
                "extra_modules": {n: m.state_dict() for n, m in objective.extra_modules().items()},
            }
            # best.pt first: a run killed between the two saves resumes from the older last.pt and
            # redoes this epoch, so best.pt can never lag behind the early-stopping state in last.pt
            if improved:
                save_checkpoint(out / "best.pt", clip, **state)
            save_checkpoint(out / "last.pt", clip, **state)
            if config.progress:
                tqdm.write(_summary(row))
        if out_of_time:
            break
    if context.enabled:
        torch.distributed.barrier()
    return out / "best.pt"


def _summary(row: dict[str, Any]) -> str:
    return (f"epoch {row['epoch'] + 1}: train loss {row['train_total']:.4f}, val loss "
            f"{row['val_loss']:.4f}, val R@1 {row['val_r1']:.3f} (chance {row['val_r1_chance']:.3f}), "
            f"val zero-shot AUROC mass {row['val_zeroshot_mass']:.3f}, calcification "
            f"{row['val_zeroshot_calcification']:.3f}, {row['train_samples_per_s']:.1f} samples/s")


def main(argv: list[str] | None = None) -> Path:
    config = parse_command(
        PretrainConfig, argv, "python -m models.pretrain",
        "Contrastive image-text pretraining on VinDr/RSNA-layout data (default: the "
        "embedded synthetic set). Writes OUT/last.pt, OUT/best.pt, OUT/metrics.csv.",
    )
    best = pretrain(config)
    print(f"best checkpoint: {best}")
    return best


if __name__ == "__main__":
    run_main(main)
