"""Channel methods: FActOR and its controls weight one layer's ``(B, C, h, w)`` feature maps.

FActOR keeps, per image, the ``top_k`` channels whose mapped embeddings align best with the text
embedding, weighted by their cosines; its controls are ``k`` random channels per image (chance),
the mean of all channels (finding-agnostic) and one fixed channel chosen on validation boxes (the
box-supervised oracle). Their weights are summed over the maps and upsampled by the study
(:func:`mammo_interp.heatmaps.channel_heatmaps`), from cached feature maps or from images.
"""

from __future__ import annotations

import torch
from torch import nn

from mammo_interp.methods import Method, MethodContext
from models.training import eval_mode


def top_k_weights(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, C)`` weights keeping each row's ``k`` highest scores (clamped at 0), others 0."""
    k = min(k, scores.shape[1])
    values, index = scores.topk(k, dim=1)
    return torch.zeros_like(scores).scatter(1, index, values.clamp(min=0) + 1e-6)


def channel_alignment(mapper: nn.Module, maps: torch.Tensor, text_embedding: torch.Tensor,
                      batch_size: int = 64) -> torch.Tensor:
    """``(N, C)`` cosine of every channel of every image with the attribute (eval mode, no gradients)."""
    with torch.no_grad(), eval_mode(mapper):
        return torch.cat([mapper.alignment(maps[i:i + batch_size], text_embedding)
                          for i in range(0, len(maps), batch_size)])


def factor_weights(mapper: nn.Module, maps: torch.Tensor, text_embedding: torch.Tensor, k: int,
                   batch_size: int = 64) -> torch.Tensor:
    """FActOR: per image, the ``k`` channels best aligned with the attribute, weighted by cosine."""
    return top_k_weights(channel_alignment(mapper, maps, text_embedding, batch_size), k)


def random_weights(n_images: int, n_channels: int, k: int, seed: int) -> torch.Tensor:
    """``k`` channels drawn uniformly per image (seeded), equal weights: FActOR's chance level."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_images, n_channels, generator=generator)
    return (top_k_weights(scores, k) > 0).float()


def mean_weights(n_images: int, n_channels: int) -> torch.Tensor:
    return torch.full((n_images, n_channels), 1.0 / n_channels)


def single_channel_weights(n_images: int, n_channels: int, channel: int) -> torch.Tensor:
    weights = torch.zeros(n_images, n_channels)
    weights[:, channel] = 1.0
    return weights


def _factor(context: MethodContext, maps: torch.Tensor) -> torch.Tensor:
    mapper = context.mapper_on(maps.device)
    return factor_weights(mapper, maps, context.text_embedding.to(maps.device), context.top_k)


FACTOR = (Method(
    "factor", "FActOR top-k", "FActOR", "the paper's method: the top-k channels best aligned with the text "
    "(--top-k), weighted by cosine", channel_weights=_factor, needs=frozenset({"text", "mapper"})))
RANDOM_CHANNELS = (Method(
    "random_channels", "random k channels", "channel baseline", "k channels drawn at random per image (seeded): "
    "chance", channel_weights=lambda context, maps: random_weights(len(maps), maps.shape[1], context.top_k,
                                                                   context.seed)))
MEAN_CHANNELS = (Method(
    "mean_channels", "mean of channels", "channel baseline", "the mean of every channel (finding-agnostic)",
    channel_weights=lambda context, maps: mean_weights(len(maps), maps.shape[1])))
ORACLE_CHANNEL = (Method(
    "oracle_channel", "oracle channel (val boxes)", "channel baseline", "the one channel that best covers the "
    "validation boxes (box-supervised)", needs=frozenset({"validation boxes"}),
    channel_weights=lambda context, maps: single_channel_weights(len(maps), maps.shape[1], context.oracle())))

METHODS = (FACTOR, RANDOM_CHANNELS, MEAN_CHANNELS, ORACLE_CHANNEL)  # registered in this order
