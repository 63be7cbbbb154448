"""Label-preserving image augmentation for training batches (supervised reference and CLIP).

Draws come from the caller's ``torch.Generator``, so an epoch's augmentation is reproducible.
"""

from __future__ import annotations

import math

import torch


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving jitter of a ``(..., 1, H, W)`` batch in [0, 1], each image on its own: flips,
    gamma 0.7-1.4, contrast 0.8-1.2 about the image mean (a lesion's look relative to its tissue is
    kept). An all-zero image (a missing view) stays all zero."""
    shape = images.shape
    images = images.reshape(-1, *shape[-3:])
    b = images.shape[0]
    u = torch.rand(b, 4, generator=generator)
    images = torch.where((u[:, 0] < 0.5)[:, None, None, None], images.flip(-1), images)
    images = torch.where((u[:, 1] < 0.5)[:, None, None, None], images.flip(-2), images)
    gamma = torch.exp(math.log(0.7) + u[:, 2] * math.log(2.0))[:, None, None, None]
    images = images.clamp(0, 1) ** gamma
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (0.8 + 0.4 * u[:, 3])[:, None, None, None]
    return ((images - mean) * contrast + mean).clamp(0, 1).reshape(shape)

