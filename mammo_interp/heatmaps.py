"""Heatmap methods compared on the same images, boxes and heatmap→box rule.

Every method returns ``(N, H, W)`` float32 heatmaps at the preprocessed image size, min-max
normalized inside the breast mask and 0 outside it (tissue only: air and padding never win).

- Channel methods weight feature-map channels and upsample: FActOR's top-k aligned channels,
  ``k`` random channels, the mean of all channels, and one fixed channel (the box-supervised oracle).
- Gradient methods go through the CLIP image tower with the cosine to the attribute's text
  embedding as target: Grad-CAM at the feature layer (captum ``LayerGradCam``), Grad-CAM++
  (pytorch-grad-cam), LayerCAM (gradients down to the layer only; equal to pytorch-grad-cam's),
  gScoreCAM (Score-CAM over the channels of largest gradient, the
  CAM designed for CLIP; pytorch-grad-cam's plumbing, our channel scoring) and Integrated Gradients
  on the pixels (captum, zero baseline, smoothed, since pixel maps are speckled).
- The breast prior needs no model: the distance to the tissue's edge (a centre-of-breast prior).

Gradient methods run on the model's device (images are moved there batch by batch) and return
their maps on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.base_cam import BaseCAM
from scipy.ndimage import distance_transform_edt, gaussian_filter
from torch import nn

from mammo_interp.mapper import ChannelMapper
from models.clip import ClipModel
from models.device import module_device
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
        chunk = maps[start:start + batch_size].float()
        combined = torch.einsum("nchw,nc->nhw", chunk, weights[start:start + batch_size].float())
        parts.append(upsample(combined, size))
    return normalize_in_mask(torch.cat(parts), masks)


def top_k_weights(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, C)`` weights keeping each row's ``k`` highest scores (clamped at 0), others 0."""
    k = min(k, scores.shape[1])
    values, index = scores.topk(k, dim=1)
    return torch.zeros_like(scores).scatter(1, index, values.clamp(min=0) + 1e-6)


def channel_alignment(mapper: ChannelMapper, maps: torch.Tensor, text_embedding: torch.Tensor,
                      batch_size: int = 64) -> torch.Tensor:
    """``(N, C)`` cosine of every channel of every image with the attribute (eval mode, no gradients)."""
    with torch.no_grad(), eval_mode(mapper):
        return torch.cat([mapper.alignment(maps[i:i + batch_size], text_embedding)
                          for i in range(0, len(maps), batch_size)])


def factor_weights(mapper: ChannelMapper, maps: torch.Tensor, text_embedding: torch.Tensor, k: int,
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


def breast_prior(masks: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest non-breast pixel or image border: peaks in the middle of the
    tissue (not at the chest wall), knows nothing of lesions."""
    distances = torch.stack([
        torch.from_numpy(distance_transform_edt(np.pad(m.numpy(), 1))[1:-1, 1:-1].astype(np.float32))
        for m in masks])
    return normalize_in_mask(distances, masks)


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


def grad_cam(target: nn.Module, layer: nn.Module, images: Callable[[slice], torch.Tensor], n: int,
             masks: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """captum ``LayerGradCam`` (ReLU of the gradient-weighted channel sum) at ``layer``."""
    method = LayerGradCam(target, layer)
    with eval_mode(target):
        maps = _batched(target, images, n, batch_size,
                        lambda x: method.attribute(x.detach().requires_grad_(True), relu_attributions=True)[:, 0])
    return normalize_in_mask(upsample(maps, tuple(masks.shape[1:])), masks)


def _score(output: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-image target: the wrapped model's output already is the score."""
    return output


class GScoreCAM(BaseCAM):
    """gScoreCAM (Chen et al., ACCV 2022): Score-CAM restricted to the ``top_k`` channels of
    largest mean gradient. Each kept channel's activation, upsampled and min-max normalized, masks
    the image; the masked images' scores times ``logit_scale`` go through a softmax over the kept
    channels to give their weights (the others get 0). Cost: ``top_k`` extra forwards per image.
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], top_k: int = 16,
                 logit_scale: float = 100.0, batch_size: int = 16) -> None:
        super().__init__(model, target_layers, uses_gradients=True)
        self.top_k, self.logit_scale, self.batch_size = top_k, logit_scale, batch_size

    def get_cam_weights(self, input_tensor: torch.Tensor, target_layer: nn.Module, targets: list,
                        activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        importance = grads.mean(axis=(2, 3))
        weights = np.zeros_like(importance)
        with torch.no_grad():
            for b, target in enumerate(targets):
                channels = np.argsort(-importance[b], kind="stable")[:self.top_k]
                kept = torch.from_numpy(activations[b:b + 1, channels]).to(self.device)
                masks = F.interpolate(kept, size=tuple(input_tensor.shape[-2:]), mode="bilinear",
                                      align_corners=True)[0]  # as pytorch-grad-cam's Score-CAM
                low, high = masks.amin(dim=(1, 2), keepdim=True), masks.amax(dim=(1, 2), keepdim=True)
                masked = input_tensor[b:b + 1] * ((masks - low) / (high - low + 1e-8))[:, None]
                scores = torch.cat([torch.stack([target(o) for o in self.model(masked[i:i + self.batch_size])])
                                    for i in range(0, len(channels), self.batch_size)])
                weights[b, channels] = torch.softmax(scores.float() * self.logit_scale, dim=0).cpu().numpy()
        return weights


CAM_METHODS: dict[str, Callable[..., BaseCAM]] = {"gradcam_plus_plus": GradCAMPlusPlus, "gscorecam": GScoreCAM}


def layer_activations_and_gradients(target: nn.Module, layer: nn.Module, *inputs: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output and the gradient of ``target(*inputs).sum()`` with respect to it, both
    ``(N, C, h, w)``. The gradient is taken down to the layer only (``torch.autograd.grad``), not
    through the layers below it or into the weights, which a full ``backward()`` would also do."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.enable_grad():
            score = target(*inputs).sum()
            gradients, = torch.autograd.grad(score, seen[-1])
    finally:
        handle.remove()
    return seen[-1].detach(), gradients.detach()


def layer_cam_maps(target: nn.Module, layer: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., TIP 2021) at ``layer``'s resolution, not normalized:
    ``ReLU(sum_c ReLU(dS/dA_c) * A_c)``, ``(N, h, w)``."""
    activations, gradients = layer_activations_and_gradients(target, layer, *inputs)
    return (gradients.clamp(min=0) * activations).sum(dim=1).clamp(min=0).float()


def layer_cam(target: nn.Module, layer: nn.Module, images: Callable[[slice], torch.Tensor], n: int,
              masks: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """LayerCAM upsampled bilinearly and normalized in the mask. Equal to pytorch-grad-cam's
    ``LayerCAM`` (tested), at the cost of one forward and a backward down to ``layer`` where
    pytorch-grad-cam backpropagates through the whole network."""
    with eval_mode(target):
        maps = _batched(target, images, n, batch_size, lambda x: layer_cam_maps(target, layer, x))
    return normalize_in_mask(upsample(maps, tuple(masks.shape[1:])), masks)


def library_cam(method: str, target: nn.Module, layer: nn.Module, images: Callable[[slice], torch.Tensor], n: int,
                masks: torch.Tensor, batch_size: int = 16, **options: object) -> torch.Tensor:
    """A CAM of :data:`CAM_METHODS` at ``layer`` with ``target``'s ``(B,)`` output as the score
    (pytorch-grad-cam: ReLU of the channel-weighted activations, upsampled bilinearly to the input)."""
    with eval_mode(target), torch.enable_grad():  # gradients even where the caller turned them off
        cam = CAM_METHODS[method](model=target, target_layers=[layer], **options)
        try:  # not its context manager, which swallows an IndexError
            maps = _batched(target, images, n, batch_size,
                            lambda x: torch.from_numpy(cam(input_tensor=x, targets=[_score] * len(x))))
        finally:
            cam.activations_and_grads.release()
    return normalize_in_mask(maps, masks)


def integrated_gradients(target: nn.Module, images: Callable[[slice], torch.Tensor], n: int,
                         masks: torch.Tensor, steps: int = 8, sigma: float = 4.0,
                         batch_size: int = 2) -> torch.Tensor:
    """captum Integrated Gradients from a black image, ``|attribution|`` smoothed by a Gaussian of
    ``sigma`` pixels (pixel-level maps are speckled; boxes need regions).

    ``batch_size`` images (times ``steps`` interpolation points) go through the network at once;
    on 2 CPU cores 2 is 4x faster than 8 at 256 x 160 (large activations thrash the allocator).
    """
    method = IntegratedGradients(target)
    with eval_mode(target):
        maps = _batched(target, images, n, batch_size, lambda x: method.attribute(
            x, baselines=torch.zeros_like(x), n_steps=steps, internal_batch_size=batch_size * steps,
        ).abs()[:, 0])
    smoothed = torch.stack([torch.from_numpy(gaussian_filter(m.numpy(), sigma)) for m in maps])
    return normalize_in_mask(smoothed, masks)
