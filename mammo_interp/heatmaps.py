"""Heatmaps of any registered method (:mod:`mammo_interp.methods`), on the same images and masks.

Every heatmap is ``(N, H, W)`` float32 at the preprocessed image size, min-max normalized inside
the breast mask and 0 outside it (tissue only: air and padding never win). Channel methods are
summed from ``(N, C, h, w)`` feature maps (:func:`feature_heatmaps`), methods that run the model
get a target module giving one score per image (:class:`SimilarityTarget`: the cosine to a text
embedding; :class:`LogitTarget`: a classifier's logit) and run on its device, batch by batch, their
maps coming back on the CPU (:func:`model_heatmaps`); the prior needs masks only (:func:`mask_heatmaps`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mammo_interp.methods import Method, MethodContext
from models.clip import ClipModel
from models.device import module_device
from models.encoders.tokens import attached
from models.training import eval_mode


def normalize_in_mask(heatmaps: torch.Tensor, masks: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Min-max each ``(H, W)`` map to [0, 1] over its mask; 0 outside. A flat map becomes 0.
    Batched over ``chunk`` maps at a time: no per-image loop, which on a GPU would wait on the
    device once per image, and no split-sized temporaries."""
    return torch.cat([_normalize_chunk(heatmaps[i:i + chunk].float(), masks[i:i + chunk].bool())
                      for i in range(0, len(heatmaps), chunk)]) if len(heatmaps) else heatmaps.float().clone()


def _normalize_chunk(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    low = torch.where(masks, heatmaps, torch.inf).amin(dim=(-2, -1), keepdim=True)
    high = torch.where(masks, heatmaps, -torch.inf).amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    return torch.where(masks & (spread > 0), (heatmaps - low) / torch.where(spread > 0, spread, 1.0), 0.0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear ``(N, h, w)`` -> ``(N, H, W)``."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def channel_heatmaps(maps: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor,
                     batch_size: int = 64) -> torch.Tensor:
    """``sum_c weights[n, c] * maps[n, c]`` upsampled to the mask size and normalized in the mask.

    Args:
        maps: ``(N, C, h, w)`` feature maps.
        weights: ``(N, C)`` channel weights (zeros drop a channel).
        masks: ``(N, H, W)`` bool breast masks.
    """
    size = tuple(masks.shape[1:])
    parts = []
    for start in range(0, len(maps), batch_size):
        parts.append(upsample(weighted_channels(maps[start:start + batch_size], weights[start:start + batch_size]),
                              size))
    return normalize_in_mask(torch.cat(parts), masks)


def weighted_channels(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` maps, ``(N, C)`` weights -> ``(N, h, w)`` weighted sums (float32)."""
    return torch.einsum("nchw,nc->nhw", maps.float(), weights.float())


class SimilarityTarget(nn.Module):
    """Image tower of a CLIP model -> ``(B,)`` cosine to a fixed text embedding (the attribution
    target; a callable like pytorch-grad-cam's targets).

    ``model`` is a CLIP model with ``encode_image`` (this project's, open_clip's) or any module whose
    forward gives ``(B, D)`` image embeddings; they are L2-normalized here either way.
    """

    def __init__(self, model: ClipModel | nn.Module, text_embedding: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("text_embedding", F.normalize(text_embedding.detach().float(), dim=-1)
                             .to(module_device(model)))
        self.train(model.training)  # a new wrapper is in training mode; eval_mode would restore that onto the model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embed = getattr(self.model, "encode_image", self.model)
        return F.normalize(embed(images), dim=-1) @ self.text_embedding


class OutputTarget(nn.Module):
    """A model and a function of its output -> ``(B,)`` scores: a user's own target, as in
    pytorch-grad-cam (batched: ``score(model(images))`` gives one number per image)."""

    def __init__(self, model: nn.Module, score: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.score = model, score
        self.train(model.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.score(self.model(images))
        if not isinstance(scores, torch.Tensor) or scores.shape != (len(images),):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"a target function must give one score per image, shape ({len(images)},); got {shape}")
        return scores


class LogitTarget(nn.Module):
    """A classifier's ``(B, K)`` logits -> ``(B,)`` logit of one class (e.g. the supervised
    reference's finding logit as a Grad-CAM target)."""

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model, self.index = model, index
        self.train(model.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[:, self.index]


def _batched(target: nn.Module, images: Callable[[slice], torch.Tensor], n: int, batch_size: int,
             attribute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``attribute`` over batches of ``images`` moved to ``target``'s device; float32 on the CPU."""
    device = module_device(target)
    return torch.cat([attribute(images(slice(i, i + batch_size)).to(device)).detach().float().cpu()
                      for i in range(0, n, batch_size)])


def model_maps(method: Method, context: MethodContext, target: nn.Module, layer: nn.Module | None,
               images: Callable[[slice], torch.Tensor], n: int) -> torch.Tensor:
    """The raw maps of a method that runs the model (``method.maps``), float32 on the CPU, at the
    method's resolution: ``target`` scores the images (the study's; a reference method takes the
    context's reference and its layer), in batches of ``method.batch_size`` moved to its device."""
    if method.explains == "reference":
        target, layer = context.reference
    with eval_mode(target), attached(layer):
        return _batched(target, images, n, method.batch_size, lambda x: method.maps(context, target, layer, x))


def model_heatmaps(method: Method, context: MethodContext, target: nn.Module, layer: nn.Module | None,
                   images: Callable[[slice], torch.Tensor], n: int, masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` heatmaps of a method that runs the model: :func:`model_maps`, upsampled
    bilinearly where they are at the layer's resolution, each normalized in its mask."""
    maps = model_maps(method, context, target, layer, images, n)
    if method.resolution == "layer":
        maps = upsample(maps, tuple(masks.shape[1:]))
    return normalize_in_mask(maps, masks)


def mask_heatmaps(method: Method, masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` heatmaps of a method that needs no model (``method.mask_maps``)."""
    return normalize_in_mask(method.mask_maps(masks), masks)


def feature_heatmaps(method: Method, context: MethodContext, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` heatmaps of a channel method from ``(N, C, h, w)`` feature maps."""
    return channel_heatmaps(maps, method.channel_weights(context, maps).to(maps.device), masks)
