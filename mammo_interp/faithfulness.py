"""Deletion and insertion curves (Petsiuk et al., BMVC 2018), restricted to the breast.

A faithful map ranks first the pixels the model's score depends on. Deletion replaces the breast's
pixels, hottest first, by a blurred copy of the image and follows the score down; insertion starts
from the blurred image and puts the hottest pixels back. Blurring (not a constant fill) removes a
lesion's local structure without drawing new edges; only breast pixels move, since the background
carries no finding. The score is the model's (e.g. the CLIP cosine to the attribute's text, the
target Grad-CAM explains). Per image: the area under each curve over the fraction of breast pixels
moved (trapezoid rule on :data:`FRACTIONS`) and their difference, insertion minus deletion (higher
is more faithful; a map that ranks pixels at random has an expected difference near 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from scipy.integrate import trapezoid
from scipy.ndimage import gaussian_filter

FRACTIONS = np.linspace(0.0, 1.0, 11)
BLUR_SIGMA = 8.0  # pixels at the analysis size: wider than a calcification cluster, most of a mass


def blurred(image: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of one ``(1, H, W)`` image (scipy, reflecting borders)."""
    return torch.from_numpy(gaussian_filter(image[0].double().numpy(), sigma)).to(image.dtype)[None]


def ranked_pixels(heat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the breast's pixels, hottest first (ties in reading order)."""
    inside = torch.nonzero(mask.flatten()).flatten()
    order = torch.argsort(heat.flatten()[inside].float(), descending=True, stable=True)
    return inside[order]


def perturbed(image: torch.Tensor, baseline: torch.Tensor, order: torch.Tensor,
              fractions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, 1, H, W)`` deletion images (the first ``f`` of ``order`` taken from ``baseline``) and
    insertion images (``baseline`` with those pixels from ``image``), one per fraction ``f``."""
    flat, base = image.flatten(), baseline.flatten()
    deletion, insertion = [], []
    for fraction in fractions:
        moved = order[:int(round(fraction * len(order)))]
        deleted, inserted = flat.clone(), base.clone()
        deleted[moved], inserted[moved] = base[moved], flat[moved]
        deletion.append(deleted.reshape(image.shape))
        insertion.append(inserted.reshape(image.shape))
    return torch.stack(deletion), torch.stack(insertion)


@torch.no_grad()
def perturbation_curves(score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                        heatmaps: torch.Tensor, masks: torch.Tensor, fractions: np.ndarray = FRACTIONS,
                        sigma: float = BLUR_SIGMA) -> pd.DataFrame:
    """One row per image: ``deletion_auc``, ``insertion_auc``, ``difference`` and the two curves.

    Args:
        score: ``(B, 1, H, W)`` images -> ``(B,)`` model scores (run in one batch per image).
        images: ``(N, 1, H, W)`` model inputs.
        heatmaps: ``(N, H, W)`` maps to evaluate.
        masks: ``(N, H, W)`` bool breast masks.
    """
    rows = []
    for index, (image, heat, mask) in enumerate(zip(images, heatmaps, masks)):
        deletion, insertion = perturbed(image.float(), blurred(image.float(), sigma), ranked_pixels(heat, mask),
                                        fractions)
        scores = score(torch.cat([deletion, insertion])).float().cpu().numpy()
        down, up = scores[:len(fractions)], scores[len(fractions):]
        rows.append({"image": index, "deletion_auc": float(trapezoid(down, fractions)),
                     "insertion_auc": float(trapezoid(up, fractions)),
                     "difference": float(trapezoid(up, fractions) - trapezoid(down, fractions)),
                     "deletion_curve": down.tolist(), "insertion_curve": up.tolist()})
    return pd.DataFrame(rows)
