"""Which images a training epoch sees: image-level finding targets and batches balanced between
images with and without findings, so a finding on a tenth of the images still drives learning.

Every draw comes from the caller's ``torch.Generator`` (one per epoch in training), so an epoch is
reproducible after a resume.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def finding_targets(table: pd.DataFrame, findings: tuple[str, ...]) -> np.ndarray:
    """``(N, K)`` 0/1 targets: does each image carry each finding (from ``finding_categories``)."""
    return np.array([[float(f in cats) for f in findings] for cats in table["finding_categories"]],
                    dtype=np.float32).reshape(len(table), len(findings))


def balanced_order(targets: np.ndarray, positive_fraction: float, length: int,
                   generator: torch.Generator) -> list[int]:
    """``length`` image indices, ``positive_fraction`` of them images with a finding (each finding
    equally often), the rest images with none; drawn with replacement, so rare findings recur."""
    pools = [np.flatnonzero(targets[:, k] > 0) for k in range(targets.shape[1])]
    pools = [p for p in pools if len(p)]
    negatives = np.flatnonzero(targets.sum(1) == 0)
    if not pools or not len(negatives):
        raise ValueError("balanced sampling needs images with and without the findings in training")
    n_pos = round(length * positive_fraction)
    which = torch.randint(len(pools), (n_pos,), generator=generator).numpy()
    order = [int(pools[k][torch.randint(len(pools[k]), (1,), generator=generator).item()]) for k in which]
    order += negatives[torch.randint(len(negatives), (length - n_pos,), generator=generator).numpy()].tolist()
    return [order[i] for i in torch.randperm(length, generator=generator).tolist()]
