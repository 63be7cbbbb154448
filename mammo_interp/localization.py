"""Heatmaps -> boxes -> localization metrics, tables and overlay figures, one rule for every method.

A method is judged on the boxes its heatmaps give under one shared :class:`BoxRule` (quantile
threshold inside the breast, minimum area, at most a few boxes), on all images of the evaluation
split: images with the finding give hits and misses, images without it give false positives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mammo_interp.boxes import BoxRule
from mammo_interp.features import FeatureSet
from mammo_interp.metrics import ImageLocalization, localization_metrics
from mammo_interp.plotting import draw_boxes, heat_colorbar, heat_overlay, save_figure, styled
from models.data.preprocess import GeometricTransform
from models.io import atomic_write
from models.metrics import Estimate
from models.report_tables import ci_frame, ci_long_frame, write_table

# Column order of the tables (metric keys of :func:`mammo_interp.metrics.localization_metrics`).
METRIC_LABELS = {
    "iou_hit@0.25": "IoU-hit@0.25", "iou_hit@0.5": "IoU-hit@0.5", "mean_iou": "mean IoU",
    "ap@0.25": "AP@0.25", "ap@0.5": "AP@0.5", "pointing_game": "pointing game",
    "energy_pg": "energy PG",
}


def localize(heatmaps: torch.Tensor, features: FeatureSet, category_index: int,
             rule: BoxRule) -> list[ImageLocalization]:
    """Boxes of every heatmap with the image's ground truth of one category."""
    truths = features.category_boxes(category_index)
    return [ImageLocalization(rule.boxes(h.numpy(), m.numpy()), truth, h.numpy())
            for h, m, truth in zip(heatmaps, features.masks, truths)]


def evaluate_methods(heatmaps: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                     features: FeatureSet, category_index: int, rule: BoxRule, n_boot: int = 1000, seed: int = 0,
                     keep: Sequence[int] | None = None,
                     ) -> tuple[dict[str, dict[str, Estimate]], dict[str, list[ImageLocalization]]]:
    """Metrics with bootstrap CIs per method (same images, same resamples), and the boxes.

    ``heatmaps``: method -> ``(N, H, W)`` maps, or ``(method, maps)`` pairs made one at a time (then
    only one method's maps are held at once); ``keep``: the images whose localizations are returned
    (their heatmaps copied, so a method's maps can be freed), default all.
    """
    pairs = heatmaps.items() if isinstance(heatmaps, Mapping) else heatmaps
    results, localized = {}, {}
    for name, maps in pairs:
        items = localize(maps, features, category_index, rule)
        metrics = localization_metrics(items, n_boot=n_boot, seed=seed)
        results[name] = {METRIC_LABELS[k]: metrics[k] for k in METRIC_LABELS if k in metrics}
        localized[name] = items if keep is None else [
            dataclasses.replace(items[i], heatmap=items[i].heatmap.copy()) for i in keep]
        del maps, items  # before the next method's maps are made
    return results, localized


def write_localization_table(results: Mapping[str, Mapping[str, Estimate]], stem: str | Path,
                             caption: str, label: str, settings: Mapping[str, str] | None = None) -> list[Path]:
    """Methods x metrics as markdown, CSV and LaTeX (cells ``value (low–high)``), plus
    ``stem_long.csv`` with the floats; ``settings`` (method -> text) adds a ``setting`` column."""
    frame = ci_frame(results)
    if settings is not None:
        frame.insert(1, "setting", [settings[method] for method in frame["method"]])
    paths = write_table(frame, stem, caption=caption, label=label)
    long_csv = ci_long_frame(results).to_csv(index=False).encode()
    return [*paths, atomic_write(Path(f"{stem}_long.csv"), lambda stream: stream.write(long_csv))]


def predictions_frame(localized: Sequence[ImageLocalization], features: FeatureSet, method: str) -> pd.DataFrame:
    """Predicted boxes in preprocessed and in original DICOM pixel coordinates, one row per box."""
    rows = []
    for image_id, item, transform in zip(features.image_ids, localized, features.transforms):
        if not len(item.predictions):
            continue
        original = GeometricTransform.from_dict(transform).invert_boxes(item.predictions[:, :4])
        for rank, (box, back) in enumerate(zip(item.predictions, original)):
            rows.append({"method": method, "image_id": image_id, "rank": rank, "score": float(box[4]),
                         **dict(zip(("xmin", "ymin", "xmax", "ymax"), map(float, box[:4]))),
                         **dict(zip(("orig_xmin", "orig_ymin", "orig_xmax", "orig_ymax"), map(float, back)))})
    return pd.DataFrame(rows, columns=["method", "image_id", "rank", "score", "xmin", "ymin", "xmax",
                                       "ymax", "orig_xmin", "orig_ymin", "orig_xmax", "orig_ymax"])


@styled
def overlay_figure(images: Sequence[np.ndarray], localized: Mapping[str, Sequence[ImageLocalization]],
                   cases: Sequence[int], titles: Sequence[str], path: str | Path,
                   category: str) -> list[Path]:
    """Rows = cases (``titles``: side, view, id), columns = methods: image, heatmap (opacity rising
    with heat, one colorbar), ground truth (solid) and predicted boxes (dashed, white). PNG and PDF."""
    methods = list(localized)
    fig, axes = plt.subplots(len(cases), len(methods), figsize=(1.2 * len(methods) + 0.9, 1.85 * len(cases) + 0.4),
                             squeeze=False)
    for row, (case, image) in enumerate(zip(cases, images)):
        for col, method in enumerate(methods):
            item = localized[method][case]
            ax = axes[row, col]
            mappable = heat_overlay(ax, image, item.heatmap)
            draw_boxes(ax, item.ground_truth, [category] * len(item.ground_truth), linewidth=1.2)
            draw_boxes(ax, item.predictions, color="white", linewidth=0.9, linestyle="--")
            if row == 0:
                ax.set_title(method.replace(" (", "\n("), fontsize=6)
            if col == 0:
                ax.set_ylabel(titles[row])
    heat_colorbar(fig, axes, mappable)
    fig.suptitle(f"{category}: ground truth solid, predicted boxes dashed")
    return save_figure(fig, path)
