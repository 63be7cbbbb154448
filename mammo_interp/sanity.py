"""Model-randomization sanity check (Adebayo et al., NeurIPS 2018), cascading from the top.

An attribution that hardly changes when the weights it explains are replaced by random ones
describes the image, not the model. The image side of a CLIP model is re-initialized group by
group from the output down (projection, the backbone's last layers, each block from the last to the
first, the stem), cumulatively, and after each group every method's maps are compared with its
maps on the trained model: Spearman rank correlation over breast pixels and SSIM (scikit-image's
reference implementation, data range 1) per image.

Quantus has the same check (MPRT), but it re-initializes one parameterized leaf module at a time,
about a hundred steps for EfficientNet-Lite0, each recomputing every method's maps; the block groups
here keep the check minutes long on a CPU and read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn
from tqdm.auto import tqdm

from mammo_interp.plotting import QUALITATIVE, heat_colorbar, heat_overlay, styled

# A method fails when, with every image-side group randomized, the median Spearman correlation
# between its original and randomized maps is still at least this: its maps then mostly keep their
# ranking of breast pixels without the trained weights. Fixed before any run.
FAIL_SPEARMAN = 0.5
ORIGINAL = "trained"


@dataclass(frozen=True)
class Stage:
    """One group of modules re-initialized together; ``name`` as the tables show it."""

    name: str
    modules: tuple[nn.Module, ...]


def randomization_stages(model: nn.Module) -> list[Stage]:
    """Top-down groups of a CLIP model's image side: ``image_projection``, then the backbone's
    top-level children in reverse order, a container (timm's ``blocks``, ResNet's ``layerN``)
    expanded into its children. Children without parameters (pooling) are skipped."""
    backbone = model.image_encoder.backbone
    groups: list[tuple[str, nn.Module]] = []
    for name, child in backbone.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            groups.extend((f"{name}.{index}", block) for index, block in child.named_children())
        else:
            groups.append((name, child))
    stages = [Stage("image_projection", (model.image_projection,))]
    stages += [Stage(name, (module,)) for name, module in reversed(groups)
               if any(True for _ in module.parameters())]
    return stages


def reinitialize(stage: Stage, seed: int) -> None:
    """Every parameterized submodule of ``stage`` back to its PyTorch initialization (BatchNorm:
    weight 1, bias 0, running statistics reset), drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in stage.modules:
            for submodule in module.modules():
                if hasattr(submodule, "reset_parameters"):
                    submodule.reset_parameters()
                if hasattr(submodule, "reset_running_stats"):
                    submodule.reset_running_stats()


def map_similarity(original: torch.Tensor, randomized: torch.Tensor, masks: torch.Tensor) -> pd.DataFrame:
    """Per image, Spearman over breast pixels and SSIM of two ``(N, H, W)`` [0, 1] map stacks.

    A constant map (no ranking) has an undefined Spearman correlation: NaN, never counted as 0.
    """
    rows = []
    for index, (a, b, mask) in enumerate(zip(original.float().numpy(), randomized.float().numpy(),
                                             masks.numpy())):
        inside_a, inside_b = a[mask], b[mask]
        constant = np.ptp(inside_a) == 0 or np.ptp(inside_b) == 0
        rho = np.nan if constant else float(spearmanr(inside_a, inside_b).statistic)
        rows.append({"image": index, "spearman": rho,
                     "ssim": float(structural_similarity(a, b, data_range=1.0))})
    return pd.DataFrame(rows)


def cascading_randomization(model: nn.Module, heatmaps: Callable[[], Mapping[str, torch.Tensor]],
                            masks: torch.Tensor, seed: int = 0, stages: list[Stage] | None = None,
                            progress: bool = True) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Randomize ``model`` in place, stage after stage (cumulative), recomputing ``heatmaps()``
    (method name -> ``(N, H, W)`` maps of the same images, in [0, 1]) after each.

    Returns:
        One row per (method, stage, image) with ``depth`` (stages randomized so far), Spearman
        and SSIM against the trained model's maps; and per method the first image's map at the
        trained model and after each stage (for the figure).
    """
    stages = randomization_stages(model) if stages is None else stages
    original = {name: maps.detach().cpu() for name, maps in heatmaps().items()}
    examples = {name: [maps[0].float().numpy()] for name, maps in original.items()}
    frames = []
    for depth, stage in enumerate(tqdm(stages, desc="randomization", disable=not progress, leave=False), 1):
        reinitialize(stage, seed + depth)
        for name, maps in heatmaps().items():
            maps = maps.detach().cpu()
            examples[name].append(maps[0].float().numpy())
            frames.append(map_similarity(original[name], maps, masks).assign(method=name, stage=stage.name,
                                                                               depth=depth))
    return pd.concat(frames, ignore_index=True), examples


def randomization_verdict(long: pd.DataFrame) -> pd.DataFrame:
    """Per method: median Spearman and SSIM with every stage randomized, and ``passes`` (median
    Spearman below :data:`FAIL_SPEARMAN`; a method whose maps all turn constant passes)."""
    last = long[long["depth"] == long["depth"].max()]
    summary = last.groupby("method", sort=False)[["spearman", "ssim"]].median()
    summary["passes"] = ~(summary["spearman"] >= FAIL_SPEARMAN)
    return summary.reset_index()


@styled
def plot_randomization(long: pd.DataFrame, examples: Mapping[str, list[np.ndarray]], image: np.ndarray,
                       stage_names: list[str], title: str) -> Figure:
    """Top: median Spearman per method as stages are randomized (the failure line dashed; methods
    past the palette's eight colours dashed); below: the first image's maps, one row per method, at
    the trained model and after each stage."""
    methods = list(examples)
    columns = [ORIGINAL, *stage_names]
    fig = plt.figure(figsize=(7.2, 2.4 + 0.72 * len(methods)))
    grid = fig.add_gridspec(2, 1, height_ratios=(2.4, 0.72 * len(methods)))
    curve = fig.add_subplot(grid[0])
    medians = long.groupby(["method", "depth"], sort=False)["spearman"].median()
    for index, method in enumerate(methods):
        values = [1.0] + [medians.get((method, depth), np.nan) for depth in range(1, len(columns))]
        curve.plot(range(len(columns)), values, marker="o", markersize=2, linewidth=1,
                   color=QUALITATIVE[index % len(QUALITATIVE)], linestyle="-" if index < len(QUALITATIVE) else "--",
                   label=method)
    curve.axhline(FAIL_SPEARMAN, color="grey", linestyle=":", linewidth=0.8)
    curve.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    curve.set_ylabel("median Spearman with\nthe trained model's maps")
    curve.set_xlabel("image side randomized down to (cumulative, from the top)")
    curve.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    maps = grid[1].subgridspec(len(methods), len(columns), wspace=0.03, hspace=0.03)
    axes = np.array([[fig.add_subplot(maps[r, c]) for c in range(len(columns))] for r in range(len(methods))])
    mappable = None
    for r, method in enumerate(methods):
        for c, heat in enumerate(examples[method]):
            mappable = heat_overlay(axes[r, c], image, heat)
            axes[r, c].spines[:].set_visible(False)
        axes[r, 0].set_ylabel(method, rotation=0, ha="right", va="center")
    for c, name in enumerate(columns):
        axes[0, c].set_title(name, rotation=90, fontsize=5)
    if mappable is not None:
        heat_colorbar(fig, axes, mappable)
    fig.suptitle(title)
    return fig
