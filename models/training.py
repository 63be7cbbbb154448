"""Training plumbing shared by pretraining, fine-tuning and FActOR's mapper: seeding, schedule,
eval mode for a block, early stopping, distributed set-up, and a metrics history written as CSV + JSONL.

Resumability rests on two rules: every random draw of an epoch derives from ``(seed, epoch)``
(:func:`epoch_generator`), and the checkpoint saved after an epoch holds everything else that
changes (weights, optimizer, scheduler, early stopping, torch RNG, history). A run resumed from
epoch *k* then reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from models.io import atomic_write


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode (BatchNorm statistics frozen) and restore its mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def channels_last(x: torch.nn.Module | torch.Tensor) -> torch.nn.Module | torch.Tensor:
    """A model or ``(B, C, H, W)`` batch in the channels-last memory format, under which CPU
    convolutions train about 1.7x faster (same values up to rounding). Training loops opt in;
    inference keeps the default format, so existing models give the same numbers."""
    return x.to(memory_format=torch.channels_last)


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """A torch generator for one epoch's shuffling, independent of everything before it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + rank)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the base LR over ``warmup_steps``, then cosine decay to
    ``min_ratio`` × base LR at ``total_steps`` (stepped once per optimizer step)."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total > 0")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state(optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """The step state a checkpoint carries beside the weights: optimizer, learning-rate schedule,
    torch RNG, and the gradient scaler where one is active (float16)."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **({"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {})}


def restore_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any,
                            scaler: torch.amp.GradScaler) -> None:
    """Undo :func:`optimizer_state` from a checkpoint's ``state`` (a scaler missing there starts fresh)."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(state["torch_rng"])


@dataclass
class EarlyStopping:
    """Stop when the monitored validation value has not improved for ``patience`` epochs."""

    patience: int = 5
    mode: str = "min"
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def step(self, value: float, epoch: int) -> bool:
        """Record ``value``; True if it is a new best. NaN never improves."""
        sign = 1.0 if self.mode == "max" else -1.0
        improved = not math.isnan(value) and (
            self.best is None or sign * (value - self.best) > self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a ``torchrun`` job (world size 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` under torchrun on CUDA, else ``device``."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.enabled else device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device = torch.device("cpu")) -> DistributedContext:
    """Join the ``torchrun`` process group if the launcher's env vars are set: NCCL with one GPU per
    process (``LOCAL_RANK``) on CUDA, gloo on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def gather_batches(tensors: Sequence[torch.Tensor], keys: Sequence[str]) -> tuple[list[torch.Tensor], list[str]]:
    """Every process's batch, concatenated in rank order: CLIP's global negatives (open_clip's
    ``gather_features`` with gradients). ``tensors`` are ``(B, ...)`` with the same ``B`` on every
    rank (pretraining's sampler makes the ranks' batches equal); ``keys`` (e.g. the texts that
    define positives) are gathered alongside. The gather is differentiable, so a loss computed on
    the global batch by every rank, with DistributedDataParallel averaging the gradients, has
    exactly the gradient of one process on the concatenated batch. Without a process group the
    inputs come back unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors), list(keys)
    from torch.distributed.nn.functional import all_gather  # differentiable; loaded only when distributed

    gathered = [torch.cat(all_gather(tensor.contiguous())) for tensor in tensors]
    parts: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(keys))
    return gathered, [key for part in parts for key in part]


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """Average a scalar over ranks (identity without distribution)."""
    if not context.enabled:
        return value
    on_gpu = dist.get_backend() == "nccl"  # NCCL reduces GPU tensors only
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


class MetricsHistory:
    """Per-epoch metrics, rewritten in full to ``metrics.csv`` and ``metrics.jsonl`` each epoch.

    Rewriting (atomically) rather than appending keeps the files equal to the checkpoint's history,
    so a resumed run never duplicates or loses rows.
    """

    def __init__(self, folder: str | Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.folder = Path(folder)
        self.rows: list[dict[str, Any]] = list(rows or [])

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        self.write()

    def write(self) -> None:
        frame = pd.DataFrame(self.rows)
        atomic_write(self.folder / "metrics.csv",
                     lambda s: s.write(frame.to_csv(index=False).encode()))
        lines = "".join(json.dumps(row) + "\n" for row in self.rows)
        atomic_write(self.folder / "metrics.jsonl", lambda s: s.write(lines.encode()))
