"""Weakly supervised localization metrics with image-level bootstrap confidence intervals.

The localization tables of Mammo-CLIP / Mammo-FActOR score boxes derived from attribution maps
against radiologist boxes; this module computes those numbers. Boxes follow the
:mod:`mammo_interp.boxes` conventions (float pixel ``xyxy``, exclusive max edges; a pixel is in
a box when its centre is).

- :func:`best_iou_per_gt`: the IoU-hit rates and mean IoU rest on each GT box's best IoU.
- :func:`match_detections` / :func:`average_precision`: PASCAL VOC (2010+ devkit) matching and
  all-point interpolated AP, detections pooled over images.
- :func:`pointing_game` / :func:`energy_pointing_game`: heatmap-only scores (Zhang et al.;
  Score-CAM's energy-based variant).
- :func:`localization_metrics` (:func:`box_metrics` on plain box lists): a whole table row.
  Confidence intervals resample *images*, so the GT boxes and detections of one image stay
  together; per-image quantities are computed once and every resample is evaluated in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mammo_interp.boxes import as_boxes, box_iou, boxes_mask
from models.metrics import Estimate, bootstrap_statistics, safe_ratio

IOU_THRESHOLDS = (0.25, 0.5)


@dataclass(frozen=True)
class ImageLocalization:
    """Predictions and ground truth of one image, all in the same pixel coordinates.

    Attributes:
        predictions: ``(K, 5)`` rows ``xmin, ymin, xmax, ymax, score``.
        ground_truth: ``(G, 4)`` xyxy boxes; ``G = 0`` for an image without the finding.
        heatmap: ``(H, W)`` attribution map, or None when only boxes are scored.
    """

    predictions: np.ndarray
    ground_truth: np.ndarray
    heatmap: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "predictions", as_boxes(self.predictions, columns=5))
        object.__setattr__(self, "ground_truth", as_boxes(self.ground_truth))
        if self.heatmap is not None:
            object.__setattr__(self, "heatmap", _checked_heatmap(self.heatmap))


def best_iou_per_gt(predictions: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """``(G,)`` best IoU of each GT box with any of the ``(K, 4+)`` predicted boxes; 0 if K = 0."""
    predictions, ground_truth = _prediction_boxes(predictions), as_boxes(ground_truth)
    if not len(predictions):
        return np.zeros(len(ground_truth))
    return box_iou(ground_truth, predictions).max(axis=1)


def match_detections(
    predictions: np.ndarray, ground_truth: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """``(K,)`` bool true-positive flags of one image's ``(K, 5)`` detections (input order).

    VOC 2010+ devkit rule: detections are taken in descending score order (ties: input order);
    each one's GT is the box it overlaps most (taken or not). It is a true positive when that IoU
    is ``>= iou_threshold`` and that GT is not yet matched, which then becomes matched; otherwise
    (low IoU, or a duplicate of a matched GT) it is a false positive.
    """
    predictions, ground_truth = as_boxes(predictions, columns=5), as_boxes(ground_truth)
    positive = np.zeros(len(predictions), dtype=bool)
    if not len(ground_truth):
        return positive
    iou = box_iou(predictions[:, :4], ground_truth)
    best = iou.argmax(axis=1)
    matched = np.zeros(len(ground_truth), dtype=bool)
    for k in np.argsort(-predictions[:, 4], kind="stable"):
        gt = best[k]
        if iou[k, gt] >= iou_threshold and not matched[gt]:
            positive[k] = matched[gt] = True
    return positive


def average_precision(images: Sequence[ImageLocalization], iou_threshold: float) -> float:
    """PASCAL VOC all-point interpolated AP over the pooled detections of ``images``.

    Detections of all images are ranked by score (ties: image order, then input order); the
    precision curve is replaced by its monotone (right-to-left max) envelope and AP is the area
    under the resulting recall step curve. Detections on images without GT are false positives.
    NaN when there is no GT box at all.
    """
    return float(_ap_values(images, iou_threshold)(np.arange(len(images))[None])[0])


def pointing_game(heatmap: np.ndarray, ground_truth: np.ndarray, tolerance: int = 0) -> bool:
    """Whether the heatmap's maximum (its first argmax) lies in a GT box grown by ``tolerance``.

    The pixel counts as inside when its centre does (see :mod:`mammo_interp.boxes`).

    Raises:
        ValueError: no GT box (the game is only defined for images with the finding), a bad
            heatmap, or ``tolerance < 0``.
    """
    heatmap, ground_truth = _checked_heatmap(heatmap), as_boxes(ground_truth)
    if not len(ground_truth):
        raise ValueError("the pointing game needs at least one GT box")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance}")
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    grown = ground_truth + np.array([-tolerance, -tolerance, tolerance, tolerance])
    centre_x, centre_y = col + 0.5, row + 0.5
    inside = (
        (grown[:, 0] <= centre_x)
        & (centre_x < grown[:, 2])
        & (grown[:, 1] <= centre_y)
        & (centre_y < grown[:, 3])
    )
    return bool(inside.any())


def energy_pointing_game(heatmap: np.ndarray, ground_truth: np.ndarray) -> float:
    """Share of the heatmap's positive mass inside the union of the GT boxes (Score-CAM).

    NaN when the heatmap has no positive value.

    Raises:
        ValueError: no GT box, or a bad heatmap.
    """
    heatmap, ground_truth = _checked_heatmap(heatmap), as_boxes(ground_truth)
    if not len(ground_truth):
        raise ValueError("the energy pointing game needs at least one GT box")
    positive = np.clip(heatmap, 0, None)
    total = positive.sum()
    if total <= 0:
        return math.nan
    return float(positive[boxes_mask(ground_truth, heatmap.shape)].sum() / total)


def localization_metrics(
    images: Sequence[ImageLocalization],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Estimate]:
    """A localization table row with percentile-bootstrap CIs over images.

    Returns:
        ``"iou_hit@0.25"``, ``"iou_hit@0.5"``: fraction of GT boxes whose best IoU with a
        predicted box is ``>= t``; ``"mean_iou"``: mean best IoU over GT boxes; ``"ap@0.25"``,
        ``"ap@0.5"``: :func:`average_precision`. When every image has a heatmap, also
        ``"pointing_game"`` (hit fraction over images with GT) and ``"energy_pg"`` (mean over
        images with GT, leaving out those whose heatmap has no positive value). All metrics share
        one set of ``np.random.default_rng(seed)`` image resamples; resamples without any GT box
        (or without a scored image) are undefined and skipped.

    Raises:
        ValueError: no images, or heatmaps given for some images but not all.
    """
    images = list(images)
    with_heatmap = [image.heatmap is not None for image in images]
    if any(with_heatmap) and not all(with_heatmap):
        raise ValueError("give a heatmap for every image or for none")
    n_gt = np.array([len(image.ground_truth) for image in images], dtype=float)
    best = [best_iou_per_gt(image.predictions, image.ground_truth) for image in images]
    per_image = {
        **{f"iou_hit@{t}": np.array([(b >= t).sum() for b in best]) for t in IOU_THRESHOLDS},
        "mean_iou": np.array([b.sum() for b in best]),
    }
    ap = {f"ap@{t}": _ap_values(images, t) for t in IOU_THRESHOLDS}
    if all(with_heatmap):
        has_gt = n_gt > 0
        hits = [
            pointing_game(image.heatmap, image.ground_truth) if gt else False
            for image, gt in zip(images, has_gt)
        ]
        energy = np.array(
            [
                energy_pointing_game(image.heatmap, image.ground_truth) if gt else math.nan
                for image, gt in zip(images, has_gt)
            ]
        )
        scored = np.isfinite(energy)
        image_means = {
            "pointing_game": (np.array(hits, dtype=float), has_gt.astype(float)),
            "energy_pg": (np.where(scored, energy, 0.0), scored.astype(float)),
        }
    else:
        image_means = {}

    def values(indices: np.ndarray) -> dict[str, np.ndarray]:
        counts = _counts(indices, len(images))
        out = {name: safe_ratio(counts @ totals, counts @ n_gt) for name, totals in per_image.items()}
        out.update({name: batched(indices) for name, batched in ap.items()})
        out.update(
            {name: safe_ratio(counts @ num, counts @ den) for name, (num, den) in image_means.items()}
        )
        return out

    return bootstrap_statistics(values, len(images), n_boot, seed, level)


def box_metrics(
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray] | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """:func:`localization_metrics` of per-image ``(K, 5)`` predicted boxes against ``(G, 4)`` ground
    truths (``(0, 4)`` for an image without the finding) and, optionally, ``(H, W)`` heatmaps.

    Raises:
        ValueError: lists of different lengths.
    """
    heatmaps = [None] * len(predictions) if heatmaps is None else [np.asarray(h) for h in heatmaps]
    if not len(predictions) == len(ground_truth) == len(heatmaps):
        raise ValueError(f"{len(predictions)} predictions, {len(ground_truth)} ground truths and "
                         f"{len(heatmaps)} heatmaps: one of each per image")
    return localization_metrics([ImageLocalization(p, g, h) for p, g, h in zip(predictions, ground_truth, heatmaps)],
                                n_boot, seed)


def _ap_values(
    images: Sequence[ImageLocalization], iou_threshold: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Batched AP: maps ``(B, n)`` image index rows to ``(B,)`` APs of the resampled image sets.

    VOC matching stays within an image, so TP flags are computed once. A resample repeats image
    ``i`` ``c_i`` times; its pooled ranking is the full ranking with each detection given weight
    ``c_i`` (copies are adjacent and share the flag). Within a block of equal copies precision is
    monotone, so the envelope needs only block ends, and each TP copy adds the envelope there.
    """
    scores = np.concatenate([image.predictions[:, 4] for image in images] + [np.zeros(0)])
    positive = np.concatenate(
        [match_detections(i.predictions, i.ground_truth, iou_threshold) for i in images]
        + [np.zeros(0, dtype=bool)]
    )
    owner = np.repeat(np.arange(len(images)), [len(image.predictions) for image in images])
    order = np.argsort(-scores, kind="stable")
    positive, owner = positive[order], owner[order]
    n_gt = np.array([len(image.ground_truth) for image in images], dtype=float)

    def values(indices: np.ndarray) -> np.ndarray:
        counts = _counts(indices, len(images))
        weights = counts[:, owner].astype(float)
        true_pos = np.cumsum(weights * positive, axis=1)
        ranked = np.cumsum(weights, axis=1)
        precision = np.divide(true_pos, ranked, out=np.zeros_like(true_pos), where=ranked > 0)
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        return safe_ratio((weights * positive * envelope).sum(axis=1), counts @ n_gt)

    return values


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``(B, n)`` how often each of ``n`` images occurs in each row of ``(B, m)`` ``indices``."""
    batch = len(indices)
    flat = (np.arange(batch)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=batch * n).reshape(batch, n)


def _prediction_boxes(predictions: np.ndarray) -> np.ndarray:
    """The xyxy part of ``(K, 4)`` boxes or ``(K, 5)`` scored detections."""
    predictions = np.asarray(predictions, dtype=float)
    columns = 5 if predictions.ndim == 2 and predictions.shape[1] == 5 else 4
    return as_boxes(predictions, columns=columns)[:, :4]


def _checked_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """``heatmap`` as a finite 2-D float array."""
    heatmap = np.asarray(heatmap, dtype=float)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W); got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap must be finite (no NaN or inf)")
    return heatmap
