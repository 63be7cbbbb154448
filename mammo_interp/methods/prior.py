"""The breast prior: no model, the distance to the tissue's edge (every localization table's floor)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from mammo_interp.methods import Method


def breast_prior(masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` distance to the nearest non-breast pixel or image border: peaks in the middle
    of the tissue (not at the chest wall), knows nothing of lesions. Not normalized."""
    return torch.stack([
        torch.from_numpy(distance_transform_edt(np.pad(m.numpy(), 1))[1:-1, 1:-1].astype(np.float32))
        for m in masks])


BREAST_PRIOR = (Method("breast_prior", "breast prior", "prior", "the distance to the tissue's edge: a "
                               "centre-of-breast prior that knows no lesion", mask_maps=breast_prior))

METHODS = (BREAST_PRIOR,)  # registered in this order
