"""Occlusion (captum): the score's drop when a square window of the image is set to 0.

Averaged over the windows covering each pixel; ``context.occlusion_window`` px squares every
``context.occlusion_stride`` px. Runs on images ``(B, 1, H, W)`` and on exams ``(B, V, 1, H, W)``
(one view's window at a time); costs one forward per window position.
"""

from __future__ import annotations

import torch
from torch import nn

from mammo_interp.methods import Method, MethodContext


def occlusion_maps(target: nn.Module, images: torch.Tensor, *extra: torch.Tensor, window: int = 64,
                   stride: int = 32, perturbations_per_eval: int = 4) -> torch.Tensor:
    """Score drop per pixel: ``images``' shape without the channel axis (float32, on the CPU)."""
    from captum.attr import Occlusion  # captum imports pyplot: on first use, not with the registry

    leading = (1,) * (images.ndim - 3)  # the channel axis, and the view axis of exams: one at a time
    with torch.no_grad():
        attributions = Occlusion(target).attribute(
            images, sliding_window_shapes=(*leading, window, window), strides=(*leading, stride, stride),
            baselines=0.0, additional_forward_args=extra or None, perturbations_per_eval=perturbations_per_eval)
    return attributions[..., 0, :, :].float().cpu()


def _occlusion(context: MethodContext, target: nn.Module, layer: nn.Module, images: torch.Tensor,
               *extra: torch.Tensor) -> torch.Tensor:
    return occlusion_maps(target, images, *extra, window=context.occlusion_window, stride=context.occlusion_stride)


OCCLUSION = (Method(
    "occlusion", "occlusion", "perturbation", "the score's drop when a square window is blacked out (captum; "
    "one forward per window position)", maps=_occlusion, resolution="input", per_view=True))

METHODS = (OCCLUSION,)  # registered in this order
