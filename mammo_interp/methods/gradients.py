"""Integrated Gradients on the pixels (captum), from a black image.

Pixel maps are speckled and boxes need regions, so ``|attribution|`` is smoothed by a Gaussian of
``context.ig_sigma`` pixels. Runs on images ``(B, 1, H, W)`` and on exams ``(B, V, 1, H, W)`` (the
exam's views interpolated together; a missing view is never encoded, so its map is 0).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from mammo_interp.methods import Method, MethodContext


def integrated_gradients_maps(target: nn.Module, images: torch.Tensor, *extra: torch.Tensor, steps: int = 8,
                              sigma: float = 4.0, internal_batch_size: int | None = None) -> torch.Tensor:
    """``|IG|`` of the first image channel, smoothed: ``images``' shape without the channel axis
    (float32, on the CPU). ``internal_batch_size`` counts inputs times steps per forward (None: all)."""
    from captum.attr import IntegratedGradients  # captum imports pyplot: on first use, not with the registry

    method = IntegratedGradients(target)
    attributions = method.attribute(images, baselines=torch.zeros_like(images), additional_forward_args=extra or None,
                                    n_steps=steps, internal_batch_size=internal_batch_size or len(images) * steps)
    maps = attributions.detach().abs()[..., 0, :, :].float().cpu()
    smoothed = [gaussian_filter(m, sigma) for m in maps.reshape(-1, *maps.shape[-2:]).numpy()]
    return torch.from_numpy(np.stack(smoothed)).view(maps.shape)


def _integrated_gradients(context: MethodContext, target: nn.Module, layer: nn.Module, images: torch.Tensor,
                          *extra: torch.Tensor) -> torch.Tensor:
    return integrated_gradients_maps(target, images, *extra, steps=context.ig_steps, sigma=context.ig_sigma,
                                     internal_batch_size=context.ig_internal_batch)


INTEGRATED_GRADIENTS = (Method(
    "integrated_gradients", "Integrated Gradients", "gradient", "Integrated Gradients on the pixels from a black "
    "image (captum, --ig-steps), smoothed", maps=_integrated_gradients, resolution="input", per_view=True,
    batch_size=2))

METHODS = (INTEGRATED_GRADIENTS,)  # registered in this order
