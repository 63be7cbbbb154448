"""Which feature-map channels localize a finding, and does FActOR's alignment rank them first?

FActOR succeeds only if the channels its mapper aligns with the attribute text are the channels
whose activation falls on the lesions. This module measures both per channel on a labelled split
(box energy: the share of a channel's positive activation inside the ground-truth boxes) and
compares the rankings, so a table in which FActOR loses comes with the reason.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from mammo_interp.features import FeatureSet
from mammo_interp.mapper import ChannelMapper
from models.training import eval_mode
from mammo_interp.plotting import save_figure, styled


def channel_box_energy(features: FeatureSet, category_index: int) -> torch.Tensor:
    """``(C,)`` mean over images with the finding of each channel's positive activation share
    inside the category's boxes (boxes rasterized at feature-map resolution by area)."""
    positive = np.flatnonzero(features.has_category(category_index))
    if not len(positive):
        raise ValueError("no image with the finding to measure channel box energy on")
    height, width = features.image_size
    maps = features.maps[positive].float().clamp(min=0)
    cells = torch.zeros(len(positive), *maps.shape[2:])
    boxes_per_image = features.category_boxes(category_index)
    for row, index in enumerate(positive):
        inside = torch.zeros(height, width)
        for xmin, ymin, xmax, ymax in boxes_per_image[index].astype(int):
            inside[ymin:ymax, xmin:xmax] = 1
        cells[row] = F.adaptive_avg_pool2d(inside[None], maps.shape[2:])[0]
    energy = (maps * cells[:, None]).sum(dim=(2, 3)) / maps.sum(dim=(2, 3)).clamp(min=1e-6)
    return energy.mean(dim=0)


def oracle_channel(features: FeatureSet, category_index: int) -> int:
    """The channel with the highest box energy: an upper reference that uses box labels."""
    return int(channel_box_energy(features, category_index).argmax())


@torch.no_grad()
def channel_diagnostics(mapper: ChannelMapper, features: FeatureSet, text_embedding: torch.Tensor,
                        category_index: int) -> dict[str, Any]:
    """Per-channel FActOR alignment (mean over images with the finding) against box energy.

    Returns the Spearman correlation, the oracle channel's rank in FActOR's ordering (0 = first)
    and both per-channel arrays.
    """
    positive = np.flatnonzero(features.has_category(category_index))
    with eval_mode(mapper):
        alignment = mapper.alignment(features.maps[positive], text_embedding).mean(dim=0)
    energy = channel_box_energy(features, category_index)
    best = int(energy.argmax())
    rho = spearmanr(alignment.numpy(), energy.numpy()).statistic
    return {"spearman_alignment_vs_box_energy": float(rho),
            "oracle_channel": best,
            "oracle_rank_by_alignment": int((alignment > alignment[best]).sum()),
            "channels": int(len(energy)),
            "alignment": alignment.numpy(), "box_energy": energy.numpy()}


@styled
def plot_channel_diagnostics(diagnostics: dict[str, Any], top_k: int, path: str, title: str) -> list:
    """Scatter of box energy against FActOR alignment per channel: FActOR's top-k and the oracle
    channel marked, the oracle's rank in FActOR's order written beside it, legend outside the data."""
    alignment, energy = diagnostics["alignment"], diagnostics["box_energy"]
    top = np.argsort(-alignment)[:top_k]
    fig, ax = plt.subplots(figsize=(3.4, 3.0))
    ax.scatter(alignment, energy, s=6, color="#999999", label="channels", linewidths=0)
    ax.scatter(alignment[top], energy[top], s=18, color="#D55E00", label=f"FActOR top-{top_k}")
    best = diagnostics["oracle_channel"]
    rank = diagnostics["oracle_rank_by_alignment"] + 1
    ax.scatter(alignment[best], energy[best], s=40, marker="*", color="#0072B2",
               label=f"oracle channel (rank {rank} of {diagnostics['channels']} by alignment)")
    ax.set_xlabel("alignment with attribute text (cosine)")
    ax.set_ylabel("activation share inside boxes")
    ax.set_title(f"{title}\nSpearman ρ = {diagnostics['spearman_alignment_vs_box_energy']:.2f}")
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    return save_figure(fig, path)
