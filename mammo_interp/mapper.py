"""Mammo-FActOR's channel mapper: each feature-map channel into the joint image-text space.

A shared MLP maps every channel's flattened ``h·w`` activation map to a joint-space vector; the
channels whose vectors align with an attribute's text embedding are the ones that "see" the
attribute. Channels and batch stay separate axes throughout (``(B, C, h·w) -> (B, C, D)``): folding
them together would mix channels of different images.

The mapper sees each map after a fixed affine scaling made from the training maps. The published
method divides every map by one global std (``standardize="global"``); with a few high-magnitude
channels that leaves the rest near zero, and the max over channels is then theirs whatever the
image (on this project's shipped model the training loss stays at chance). ``"channel"`` subtracts
each channel's training mean and divides by its std, so every channel enters at unit scale.

Training is multiple-instance contrastive: an image's score for the attribute is its best
channel's cosine to the attribute embedding over a temperature; each image with the attribute is
contrasted against images without it. Early stopping watches the validation split only.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models.device import module_device
from models.errors import check_choice
from models.metrics import auroc
from models.training import EarlyStopping


class ChannelMapper(nn.Module):
    """``(B, C, h, w)`` feature maps -> ``(B, C, D)`` L2-normalized channel embeddings.

    Inputs become ``(maps - offset) / scale`` so the MLP sees unit-range values whatever the
    backbone: ``offset`` and ``scale`` are scalars (one for all channels) or ``(C,)`` (per channel).
    """

    def __init__(self, spatial: int, embed_dim: int, hidden: int = 256, dropout: float = 0.1,
                 scale: float | torch.Tensor = 1.0, offset: float | torch.Tensor = 0.0) -> None:
        super().__init__()
        self.spatial = spatial
        self.mlp = nn.Sequential(nn.Linear(spatial, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, embed_dim))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32).clone())

    def _flat(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C, h·w)``, scaled; channels never fold into the batch."""
        flat = (maps.reshape(*maps.shape[:2], -1).float() - self.offset[..., None]) / self.scale[..., None]
        if flat.shape[-1] != self.spatial:
            raise ValueError(f"feature maps have {flat.shape[-1]} positions per channel; the mapper "
                             f"was built for {self.spatial} (a different image size or layer)")
        return flat

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self._flat(maps)), dim=-1)

    def alignment(self, maps: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` cosine of each channel's embedding with the ``(D,)`` attribute embedding.

        The last layer ``o = W h + b`` is never materialized: ``t·o = (Wᵀt)·h + t·b`` and
        ``|o|² = hᵀ(WᵀW)h + 2(Wᵀb)·h + |b|²`` cost ``hidden²`` per channel instead of
        ``hidden × D`` (exact, dropout included), which keeps box prediction within a backbone
        forward's budget and halves the training cost.
        """
        text = F.normalize(text_embedding, dim=-1)
        hidden = self.mlp[:-1](self._flat(maps))
        last = self.mlp[-1]
        weight, bias = last.weight, last.bias
        numerator = hidden @ (weight.T @ text) + bias @ text
        squared = ((hidden @ (weight.T @ weight)) * hidden).sum(-1) + 2 * hidden @ (weight.T @ bias) + bias @ bias
        return numerator / squared.clamp(min=0).sqrt().clamp(min=1e-12)


def mil_contrastive_loss(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over positive images of ``-log softmax`` of their score against all negatives'.

    Args:
        scores: ``(B,)`` image scores (max channel cosine / temperature).
        positive: ``(B,)`` bool, image has the attribute; needs at least one of each.
    """
    if not bool(positive.any()) or bool(positive.all()):
        raise ValueError("a MIL contrastive batch needs positive and negative images")
    negatives = scores[~positive]
    logits = torch.cat([scores[positive, None], negatives.expand(int(positive.sum()), -1)], dim=1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


STANDARDIZATIONS = ("global", "channel")


@dataclass(frozen=True)
class MapperConfig:
    """Mapper architecture and training."""

    standardize: str = field(default="global", metadata={
        "help": f"{STANDARDIZATIONS}: mapper inputs divided by one std of the training maps (published), "
                "or each channel standardized by its own training mean and std"})

    hidden: int = field(default=128, metadata={"help": "mapper hidden width (h*w -> hidden -> D)"})
    dropout: float = field(default=0.1, metadata={"help": "mapper dropout"})
    epochs: int = field(default=20, metadata={"help": "maximum mapper epochs"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    positives_per_batch: int = field(default=16, metadata={"help": "images with the attribute per step"})
    negatives_per_batch: int = field(default=48, metadata={"help": "images without it per step"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of the scores"})
    patience: int = field(default=5, metadata={"help": "early-stopping patience (validation loss)"})

    def __post_init__(self) -> None:
        check_choice("mapper standardize", self.standardize, STANDARDIZATIONS)

    def key(self) -> dict[str, Any]:
        """The settings as cache and shipping keys see them: the published scaling is left out, so
        keys made before the choice existed (the shipped mappers') still match."""
        settings = asdict(self)
        if settings["standardize"] == "global":
            del settings["standardize"]
        return settings


def input_scaling(maps: torch.Tensor, standardize: str, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offset, scale)`` of the mapper's inputs from the training maps ``(N, C, h, w)``.

    ``"global"``: no offset and the std of the first 256 images' activations (published); ``"channel"``:
    each channel's mean and std over all images and positions, ``(C,)`` each, accumulated in float64
    batch by batch (a split's maps stay float16 in memory).
    """
    if standardize == "global":
        return torch.tensor(0.0), maps[:256].float().std().clamp(min=1e-6)
    total = torch.zeros(maps.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(maps), batch_size):
        chunk = maps[start:start + batch_size].double().transpose(0, 1).reshape(maps.shape[1], -1)
        total += chunk.sum(dim=1)
        squares += (chunk * chunk).sum(dim=1)
    count = len(maps) * maps[0, 0].numel()
    mean = total / count
    variance = (squares - count * mean * mean) / max(count - 1, 1)
    return mean.float(), variance.clamp(min=0).sqrt().float().clamp(min=1e-6)


def image_scores(mapper: ChannelMapper, maps: torch.Tensor, text_embedding: torch.Tensor,
                 temperature: float, batch_size: int = 64) -> torch.Tensor:
    """``(N,)`` max-over-channels cosine / temperature, in eval mode, without gradients, computed
    on the mapper's device (maps moved there batch by batch) and returned on the CPU."""
    was_training = mapper.training
    mapper.eval()
    device = module_device(mapper)
    with torch.no_grad():
        scores = torch.cat([mapper.alignment(maps[i:i + batch_size].to(device), text_embedding).amax(dim=1).cpu()
                            for i in range(0, len(maps), batch_size)])
    mapper.train(was_training)
    return scores / temperature


def _validation(mapper: ChannelMapper, maps: torch.Tensor, positive: torch.Tensor,
                text_embedding: torch.Tensor, temperature: float) -> dict[str, float]:
    scores = image_scores(mapper, maps, text_embedding, temperature)
    return {"val_loss": float(mil_contrastive_loss(scores, positive)),
            "val_auroc": auroc(positive.numpy().astype(int), scores.numpy())}


def train_mapper(train_maps: torch.Tensor, train_positive: np.ndarray, val_maps: torch.Tensor,
                 val_positive: np.ndarray, text_embedding: torch.Tensor, config: MapperConfig,
                 seed: int = 0, progress: bool = True,
                 device: torch.device | str = "cpu") -> tuple[ChannelMapper, list[dict[str, Any]]]:
    """Fit a :class:`ChannelMapper` for one attribute; returns the best-validation-loss mapper (on
    the CPU) and the per-epoch history (train loss, validation loss and AUROC of the image score).
    The maps stay where they are (the CPU: a split's maps can outgrow a GPU); each batch is moved to
    ``device`` for the step. Batch draws use a CPU generator, so the order is the same on any device.

    Raises:
        ValueError: a split without positive or negative images.
    """
    train_positive = torch.as_tensor(train_positive, dtype=torch.bool)
    val_positive = torch.as_tensor(val_positive, dtype=torch.bool)
    for name, labels in (("training", train_positive), ("validation", val_positive)):
        if not bool(labels.any()) or bool(labels.all()):
            raise ValueError(f"the {name} split needs images with and without the attribute "
                             f"({int(labels.sum())} of {len(labels)} have it)")
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks and the MLP's initialisation (global RNG restored on return)
        spatial = int(np.prod(train_maps.shape[2:]))
        offset, scale = input_scaling(train_maps, config.standardize)
        mapper = ChannelMapper(spatial, int(text_embedding.shape[-1]), config.hidden, config.dropout, scale,
                               offset).to(device)
        text_embedding = text_embedding.to(device)
        optimizer = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        stopper = EarlyStopping(patience=config.patience, mode="min")
        positives = torch.nonzero(train_positive).flatten()
        negatives = torch.nonzero(~train_positive).flatten()
        best_state, history = copy.deepcopy(mapper.state_dict()), []
        bar = tqdm(range(config.epochs), desc="mapper", disable=not progress, leave=False)
        for epoch in bar:
            mapper.train()
            order = positives[torch.randperm(len(positives), generator=generator)]
            losses = []
            for start in range(0, len(order), config.positives_per_batch):
                pos = order[start:start + config.positives_per_batch]
                neg = negatives[torch.randint(len(negatives), (config.negatives_per_batch,), generator=generator)]
                index = torch.cat([pos, neg])
                scores = mapper.alignment(train_maps[index].to(device), text_embedding).amax(dim=1) / config.temperature
                loss = mil_contrastive_loss(scores, torch.arange(len(index), device=scores.device) < len(pos))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                   **_validation(mapper, val_maps, val_positive, text_embedding, config.temperature)}
            history.append(row)
            bar.set_postfix(val_loss=f"{row['val_loss']:.3f}", val_auroc=f"{row['val_auroc']:.3f}")
            if stopper.step(row["val_loss"], epoch):
                best_state = copy.deepcopy(mapper.state_dict())
            if stopper.should_stop:
                break
    mapper.load_state_dict(best_state)
    return mapper.cpu().eval(), history
