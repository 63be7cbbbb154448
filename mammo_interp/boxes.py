"""Boxes from attribution heatmaps (one rule, :class:`BoxRule`), box IoU and box rasterization.

Conventions used throughout :mod:`mammo_interp`:

- Boxes are float pixel ``xyxy`` rows ``(xmin, ymin, xmax, ymax)`` with exclusive max edges: a box
  covering pixel columns 3..5 has ``xmin = 3, xmax = 6``; its area is ``(xmax - xmin) * (ymax -
  ymin)`` (the same as torchvision's ``box_iou``).
- Images and heatmaps are ``(H, W)`` arrays; pixel ``(row, col)`` has its centre at
  ``(x, y) = (col + 0.5, row + 0.5)``.
- A pixel belongs to a box when its centre lies in ``[xmin, xmax) x [ymin, ymax)``. For
  integer-valued boxes these are exactly columns ``xmin..xmax-1`` and rows ``ymin..ymax-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

# 8-connectivity for connected regions.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# The heatmap -> box rule's defaults, shared by :func:`heatmap_to_boxes` and :class:`BoxRule`.
DEFAULT_QUANTILE = 0.95  # Mammo-FActOR's threshold
DEFAULT_MIN_AREA = 16
DEFAULT_MAX_BOXES = 3


def as_boxes(boxes: np.ndarray, columns: int = 4) -> np.ndarray:
    """``boxes`` as a float ``(N, columns)`` array; any empty input becomes ``(0, columns)``.

    Raises:
        ValueError: another shape, non-finite values, or ``xmax < xmin`` / ``ymax < ymin``.
    """
    boxes = np.asarray(boxes, dtype=float)
    if boxes.size == 0:
        return boxes.reshape(0, columns)
    if boxes.ndim != 2 or boxes.shape[1] != columns:
        raise ValueError(f"boxes must have shape (N, {columns}); got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes must be finite")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("boxes must be xyxy with xmax >= xmin and ymax >= ymin")
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection over union of ``(N, 4)`` and ``(M, 4)`` xyxy boxes.

    Pairs whose union has zero area get 0; empty inputs give an ``(N, M)`` array of zeros.
    """
    a, b = as_boxes(a), as_boxes(b)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def heatmap_to_boxes(
    heatmap: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    min_area: int = DEFAULT_MIN_AREA,
    max_boxes: int | None = DEFAULT_MAX_BOXES,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Predicted boxes from a heatmap: bounding boxes of its high-value connected regions.

    The threshold is the ``quantile`` of the heatmap values inside ``mask`` (e.g. the breast; all
    pixels when None). Regions are the 8-connected components of in-mask pixels *strictly* above
    the threshold, so a constant heatmap yields no box. Regions of fewer than ``min_area`` pixels
    are dropped.

    Args:
        heatmap: ``(H, W)`` finite values, higher = more relevant.
        quantile: in (0, 1).
        min_area: minimum region size in pixels.
        max_boxes: keep at most this many boxes (the highest scoring); None keeps all.
        mask: ``(H, W)`` bool; pixels outside it never belong to a box.

    Returns:
        ``(K, 5)`` float rows ``xmin, ymin, xmax, ymax, score`` (exclusive max edges), score = mean
        heatmap value in the region, sorted by score descending (ties: raster order of the
        region's first pixel).

    Raises:
        ValueError: a non-2-D or non-finite heatmap, a mask of another shape or without pixels,
            or ``quantile``, ``min_area``, ``max_boxes`` out of range.
    """
    heatmap = np.asarray(heatmap, dtype=float)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W); got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap must be finite (no NaN or inf)")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1); got {quantile}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0; got {min_area}")
    if max_boxes is not None and max_boxes < 1:
        raise ValueError(f"max_boxes must be >= 1 or None; got {max_boxes}")
    if mask is None:
        mask = np.ones(heatmap.shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != heatmap.shape:
            raise ValueError(f"mask shape {mask.shape} differs from heatmap shape {heatmap.shape}")
        if mask.dtype != bool:
            raise ValueError(f"mask must be a bool array; got dtype {mask.dtype}")
        if not mask.any():
            raise ValueError("mask selects no pixels")

    threshold = np.quantile(heatmap[mask], quantile)
    labels, n_regions = ndimage.label((heatmap > threshold) & mask, structure=_EIGHT_CONNECTED)
    if n_regions == 0:
        return np.zeros((0, 5))
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n_regions + 1)[1:]
    scores = np.bincount(flat, weights=heatmap.ravel(), minlength=n_regions + 1)[1:] / areas
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [[cols.start, rows.start, cols.stop, rows.stop] for rows, cols in slices], dtype=float
    )
    keep = np.flatnonzero(areas >= min_area)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_boxes]
    return np.column_stack([boxes[keep], scores[keep]])


@dataclass(frozen=True)
class BoxRule:
    """Heatmap -> boxes: connected regions above a quantile of the in-mask heatmap
    (:func:`heatmap_to_boxes`); one rule for every method a table compares."""

    quantile: float = field(default=DEFAULT_QUANTILE, metadata={"help": "heatmap quantile inside the breast (paper: 0.95)"})
    min_area: int = field(default=DEFAULT_MIN_AREA, metadata={"help": "smallest box region in pixels"})
    max_boxes: int = field(default=DEFAULT_MAX_BOXES, metadata={"help": "boxes kept per image, by mean heatmap"})

    def boxes(self, heatmap: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``(K, 5)`` ``xyxy`` + score boxes of one ``(H, W)`` heatmap."""
        return heatmap_to_boxes(heatmap, self.quantile, self.min_area, self.max_boxes, mask)

    def predict(self, heatmaps: torch.Tensor | np.ndarray,
                masks: torch.Tensor | np.ndarray | None = None) -> list[np.ndarray]:
        """Per image, the ``(K, 5)`` boxes of ``(N, H, W)`` heatmaps (``masks``: ``(N, H, W)`` bool)."""
        heatmaps = np.asarray(heatmaps)
        masks = [None] * len(heatmaps) if masks is None else np.asarray(masks)
        return [self.boxes(heatmap, mask) for heatmap, mask in zip(heatmaps, masks)]


def boxes_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool union of ``(N, 4)`` xyxy boxes: pixels whose centre lies in a box.

    Column ``c`` is covered iff ``xmin <= c + 0.5 < xmax``, i.e. columns
    ``ceil(xmin - 0.5) .. ceil(xmax - 0.5) - 1`` (rows alike); parts outside the image are cut.
    """
    boxes = as_boxes(boxes)
    height, width = shape
    x0, x1 = (np.clip(np.ceil(boxes[:, i] - 0.5), 0, width).astype(int) for i in (0, 2))
    y0, y1 = (np.clip(np.ceil(boxes[:, i] - 0.5), 0, height).astype(int) for i in (1, 3))
    # 2-D difference array: +1 at each box's top-left corner, cumulative sums fill the box.
    diff = np.zeros((height + 1, width + 1), dtype=np.int64)
    for rows, cols, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(diff, (rows, cols), sign)
    return diff.cumsum(axis=0).cumsum(axis=1)[:height, :width] > 0


def _area(boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` areas of ``(N, 4)`` xyxy boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
