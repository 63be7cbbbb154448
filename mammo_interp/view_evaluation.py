"""Scoring per-view explanations of a split: which view and breast they point at, their maps as a
localization benchmark, per-breast detection, and one CSV row per exam slot.

Works on :class:`ExamExplanation` records (one exam each, arrays over the four slots of
:data:`mammo_interp.per_view.SLOTS`), whatever made them: :mod:`mammo_interp.saliency` for a model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammo_interp.features import FeatureSet
from mammo_interp.per_view import SIDES, SLOTS, top_index
from models.data.datasets import EXAM_VIEWS
from models.metrics import Estimate, auroc, bootstrap


@dataclass
class ExamExplanation:
    """Everything computed for one exam; arrays over the V = 4 slots of :data:`SLOTS`.

    ``maps``: name -> ``(V, H, W)`` normalized maps (per-view methods jointly or per view as named,
    the baseline broadcast); ``views``: name -> ``(V,)`` view scores (attributions, map peaks,
    per-view prediction); ``breasts``: ``(2,)`` per-breast prediction (:data:`SIDES` order).
    """

    study_id: str
    images: np.ndarray
    present: np.ndarray
    masks: np.ndarray
    boxes: list[np.ndarray]
    box_labels: list[np.ndarray]
    image_ids: list[str]
    transforms: list[dict[str, Any] | None]
    exam_score: float
    maps: dict[str, torch.Tensor]
    views: dict[str, np.ndarray]
    breasts: np.ndarray

    def lesion_views(self, category_index: int) -> np.ndarray:
        return np.array([bool(p and (labels == category_index).any())
                         for p, labels in zip(self.present, self.box_labels)])


def _share(correct: np.ndarray, n_boot: int, seed: int) -> Estimate:
    return bootstrap(lambda flags, _: float(np.mean(flags)), correct.astype(float), correct, n_boot, seed)


def identification_results(explained: Sequence[ExamExplanation], category_index: int, n_boot: int = 1000,
                           seed: int = 0) -> tuple[dict[str, dict[str, Estimate]], list[int]]:
    """Per method: share of exams (finding in exactly one breast) whose top view carries a box of the
    category, and whose top breast (the top view's side; per-breast prediction: its own argmax) is
    the lesion side. Ties are broken at random, seeded by ``seed`` and the method's name (so a
    method's share does not depend on which others ran), so one map for all views scores chance.
    Also the chance row: a uniformly random present view."""
    sides = np.array([side for side, _ in EXAM_VIEWS])
    eligible = [i for i, e in enumerate(explained)
                if len(set(sides[e.lesion_views(category_index)])) == 1]
    if not eligible:
        return {}, eligible
    names = [*explained[eligible[0]].views, "per-breast prediction"]
    results: dict[str, dict[str, Estimate]] = {}
    for name in names:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # a method's ties: whatever else ran
        views_ok, breasts_ok = [], []
        for i in eligible:
            e = explained[i]
            lesion = e.lesion_views(category_index)
            lesion_side = sides[lesion][0]
            if name == "per-breast prediction":
                views_ok.append(math.nan)
                breasts_ok.append(SIDES[top_index(e.breasts, rng)] == lesion_side)
                continue
            top = top_index(e.views[name], rng)
            views_ok.append(bool(lesion[top]))
            breasts_ok.append(sides[top] == lesion_side)
        views_arr, breasts_arr = np.array(views_ok, dtype=float), np.array(breasts_ok, dtype=float)
        row = {"top view": _share(views_arr, n_boot, seed) if np.isfinite(views_arr).all() else
               Estimate(math.nan, math.nan, math.nan, 0), "top breast": _share(breasts_arr, n_boot, seed)}
        results[name] = row
    view_chance = np.mean([explained[i].lesion_views(category_index).sum() / explained[i].present.sum()
                           for i in eligible])
    breast_chance = np.mean([explained[i].present[sides == sides[explained[i].lesion_views(category_index)][0]].sum()
                             / explained[i].present.sum() for i in eligible])
    results["chance (random present view)"] = {"top view": Estimate(float(view_chance), math.nan, math.nan, 0),
                                               "top breast": Estimate(float(breast_chance), math.nan, math.nan, 0)}
    return results, eligible


def localization_inputs(explained: Sequence[ExamExplanation]) -> tuple[FeatureSet, dict[str, torch.Tensor]]:
    """Every present view as one image (boxes, masks, transforms) and every method's maps ``(N, H, W)``."""
    chosen = [(e, v) for e in explained for v in range(len(SLOTS)) if e.present[v]]
    features = FeatureSet(
        maps=torch.zeros(len(chosen), 0, 1, 1), image_ids=[e.image_ids[v] for e, v in chosen],
        boxes=[e.boxes[v] for e, v in chosen], box_labels=[e.box_labels[v] for e, v in chosen],
        masks=torch.from_numpy(np.stack([e.masks[v] for e, v in chosen])),
        transforms=[e.transforms[v] for e, v in chosen], layer="")
    heatmaps = {name: torch.stack([e.maps[name][v] for e, v in chosen]) for name in explained[0].maps}
    return features, heatmaps


def detection_results(explained: Sequence[ExamExplanation], category_index: int, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """AUROC of the exam score vs the per-breast scores, at exam level (label: any view has the
    finding; per-breast: max over breasts) and at breast level (the exam score cannot tell breasts)."""
    sides = np.array([side for side, _ in EXAM_VIEWS])
    exam_label = np.array([e.lesion_views(category_index).any() for e in explained], dtype=int)
    exam_score = np.array([e.exam_score for e in explained])
    breast_max = np.array([np.nanmax(e.breasts) for e in explained])
    rows_label, rows_breast, rows_exam = [], [], []
    for e in explained:
        lesion = e.lesion_views(category_index)
        for k, side in enumerate(SIDES):
            if e.present[sides == side].any():
                rows_label.append(int(lesion[sides == side].any()))
                rows_breast.append(e.breasts[k])
                rows_exam.append(e.exam_score)
    breast_label = np.array(rows_label)
    return {
        "exam score (exam label)": {"AUROC": bootstrap(auroc, exam_label, exam_score, n_boot, seed)},
        "max per-breast score (exam label)": {"AUROC": bootstrap(auroc, exam_label, breast_max, n_boot, seed)},
        "per-breast score (breast label)": {"AUROC": bootstrap(auroc, breast_label, np.array(rows_breast),
                                                               n_boot, seed)},
        "exam score for both breasts (breast label)": {"AUROC": bootstrap(auroc, breast_label,
                                                                          np.array(rows_exam), n_boot, seed)},
    }


def views_frame(explained: Sequence[ExamExplanation], category_index: int) -> pd.DataFrame:
    """One row per exam slot: presence, whether it carries the finding, every view score."""
    rows = []
    for e in explained:
        lesion = e.lesion_views(category_index)
        for v, slot in enumerate(SLOTS):
            rows.append({"study_id": e.study_id, "slot": slot, "image_id": e.image_ids[v],
                         "present": bool(e.present[v]), "finding": bool(lesion[v]), "exam_score": e.exam_score,
                         "breast_score": e.breasts[SIDES.index(slot[0])],
                         **{name: float(values[v]) for name, values in e.views.items()}})
    return pd.DataFrame(rows)
