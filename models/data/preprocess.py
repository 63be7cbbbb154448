"""Mammogram preprocessing with an exact, invertible geometric transform.

Pipeline (each step recorded in a :class:`GeometricTransform`, so boxes move with the pixels and
predicted boxes can be mapped back to the original image):

1. optional horizontal flip of right breasts (``flip_right``), so every chest wall is on the left;
2. border trim: a band of ``border_trim`` x side length is set to 0 on each edge (detector edges and
   film borders are bright and would otherwise join the breast);
3. breast crop: threshold, keep the **largest connected component** (burned-in labels, markers and
   dust are separate, smaller components), take its bounding box plus ``margin``;
4. resize keeping the aspect ratio to fit inside ``size`` (bilinear with antialiasing,
   ``torch.nn.functional.interpolate(..., antialias=True, align_corners=False)``: pixel edges map
   to pixel edges, so the scale is exactly ``new_size / crop_size`` per axis);
5. zero padding to exactly ``size``: the resized crop is placed at the top, against the chest-wall
   side (left, or right for an unflipped R image), and the padding goes to the bottom and the
   anterior side (away from the chest wall). Unknown laterality counts as chest wall on the left.

Coordinates: boxes are float pixel ``xyxy`` with pixel ``i`` covering ``[i, i + 1)``, so ``xmin``/
``ymin`` are the left/top pixel edges and ``xmax``/``ymax`` exclusive right/bottom edges (as VinDr's
float boxes); a full image is ``(0, 0, W, H)``.

Intensities: input and output are float32 in [0, 1], bright = dense (as :func:`read_dicom` returns).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.data.dicom import read_dicom

# The breast mask is found on an image strided down to at most this many pixels on its long side
# (~1 mm at full field of view): enough for a bounding box that then gets a margin, and 20x cheaper
# than labelling a 12-megapixel image.
_MASK_MAX_SIDE = 1024


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw pixels become model input.

    Attributes:
        size: output ``(H, W)``; portrait like the detectors (Mammo-CLIP uses 1520 x 912).
        border_trim: fraction of each side length zeroed at every image edge before cropping
            (Mammo-CLIP trims 5 px of a ~2800 px side, ~0.002; digitized film needs more).
        crop: crop to the breast; without it the whole (trimmed) image is resized.
        threshold: breast-mask threshold on the [0, 1] image; ``None`` uses Otsu's threshold
            scaled by ``otsu_fraction``.
        otsu_fraction: multiplies Otsu's threshold; below 1 it keeps the faint, thin skin edge
            that Otsu's split between air and gland would cut off.
        margin: fraction of each side length added around the breast's bounding box.
        flip_right: flip R images horizontally so the chest wall is always on the left.
    """

    size: tuple[int, int] = (512, 320)
    border_trim: float = 0.01
    crop: bool = True
    threshold: float | None = None
    otsu_fraction: float = 0.7
    margin: float = 0.01
    flip_right: bool = False

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) of positive ints, got {self.size}")
        if not 0.0 <= self.border_trim < 0.5:
            raise ValueError(f"border_trim must be a fraction in [0, 0.5), got {self.border_trim}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be a fraction in [0, 1), got {self.margin}")
        if self.threshold is not None and not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 < self.otsu_fraction <= 2.0:
            raise ValueError(f"otsu_fraction must be in (0, 2], got {self.otsu_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``size`` as a list)."""
        out = asdict(self)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(**{**data, "size": tuple(data["size"])})


@dataclass(frozen=True)
class GeometricTransform:
    """The exact map from original-image pixels to output pixels (see module docstring).

    ``x_out = (x_flip - crop[0]) * scale_x + pad[0]`` where ``x_flip = W0 - x`` if ``flipped``
    else ``x``; ``y_out = (y - crop[1]) * scale_y + pad[1]``.

    Attributes:
        original_shape: ``(H0, W0)`` of the decoded image.
        flipped: whether the image was flipped left-right before cropping.
        crop: ``(x0, y0, x1, y1)`` crop in (flipped) original pixels, ``x1``/``y1`` exclusive.
        resized_shape: ``(h, w)`` of the crop after resizing.
        pad: ``(left, top)`` position of the resized crop in the output.
        output_shape: ``(H, W)``.
    """

    original_shape: tuple[int, int]
    flipped: bool
    crop: tuple[int, int, int, int]
    resized_shape: tuple[int, int]
    pad: tuple[int, int]
    output_shape: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """``(scale_x, scale_y)``: output pixels per original pixel."""
        x0, y0, x1, y1 = self.crop
        return self.resized_shape[1] / (x1 - x0), self.resized_shape[0] / (y1 - y0)

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """``xyxy`` of the image content (not padding) in output pixels."""
        left, top = self.pad
        return left, top, left + self.resized_shape[1], top + self.resized_shape[0]

    def apply_boxes(self, boxes_xyxy: Any) -> np.ndarray:
        """Original-image boxes ``(N, 4)`` (or one ``(4,)``) to output pixels; no clipping."""
        boxes = _as_boxes(boxes_xyxy)
        out = boxes.copy()
        if self.flipped:
            width = self.original_shape[1]
            out[..., 0], out[..., 2] = width - boxes[..., 2], width - boxes[..., 0]
        sx, sy = self.scale
        x0, y0 = self.crop[:2]
        out[..., 0::2] = (out[..., 0::2] - x0) * sx + self.pad[0]
        out[..., 1::2] = (out[..., 1::2] - y0) * sy + self.pad[1]
        return out

    def invert_boxes(self, boxes_xyxy: Any) -> np.ndarray:
        """Output-pixel boxes ``(N, 4)`` (or one ``(4,)``) back to original-image pixels."""
        boxes = _as_boxes(boxes_xyxy)
        out = boxes.copy()
        sx, sy = self.scale
        x0, y0 = self.crop[:2]
        out[..., 0::2] = (boxes[..., 0::2] - self.pad[0]) / sx + x0
        out[..., 1::2] = (boxes[..., 1::2] - self.pad[1]) / sy + y0
        if self.flipped:
            width = self.original_shape[1]
            out[..., 0], out[..., 2] = width - out[..., 2], width - out[..., 0]
        return out

    def clip_boxes(self, boxes_xyxy: Any) -> np.ndarray:
        """Output-pixel boxes clipped to :attr:`content_box` (a copy)."""
        boxes = _as_boxes(boxes_xyxy)
        left, top, right, bottom = self.content_box
        boxes[..., 0::2] = boxes[..., 0::2].clip(left, right)
        boxes[..., 1::2] = boxes[..., 1::2].clip(top, bottom)
        return boxes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeometricTransform:
        return cls(
            original_shape=tuple(int(v) for v in data["original_shape"]),
            flipped=bool(data["flipped"]),
            crop=tuple(int(v) for v in data["crop"]),
            resized_shape=tuple(int(v) for v in data["resized_shape"]),
            pad=tuple(int(v) for v in data["pad"]),
            output_shape=tuple(int(v) for v in data["output_shape"]),
        )


def _as_boxes(boxes_xyxy: Any) -> np.ndarray:
    boxes = np.array(boxes_xyxy, dtype=np.float64)
    if boxes.shape[-1:] != (4,) or boxes.ndim > 2:
        raise ValueError(f"boxes must be (N, 4) or (4,) xyxy, got shape {boxes.shape}")
    return boxes


def otsu_threshold(pixels: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: maximizes the between-class variance."""
    counts, edges = np.histogram(pixels, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts).astype(np.float64)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def breast_bbox(pixels: np.ndarray, config: PreprocessConfig) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the largest bright component, before the margin.

    ``None`` when nothing is above the threshold (a blank image).
    """
    height, width = pixels.shape
    step = max(1, math.ceil(max(height, width) / _MASK_MAX_SIDE))
    small = pixels[::step, ::step]
    threshold = config.threshold
    if threshold is None:
        threshold = otsu_threshold(small) * config.otsu_fraction
    labels, count = ndimage.label(small > threshold)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    rows, cols = np.nonzero(labels == int(np.argmax(sizes)))
    return (
        int(cols.min()) * step,
        int(rows.min()) * step,
        min(width, (int(cols.max()) + 1) * step),
        min(height, (int(rows.max()) + 1) * step),
    )


def _crop_box(pixels: np.ndarray, config: PreprocessConfig) -> tuple[int, int, int, int]:
    height, width = pixels.shape
    bbox = breast_bbox(pixels, config) if config.crop else None
    if bbox is None:
        return 0, 0, width, height
    mx, my = round(config.margin * width), round(config.margin * height)
    x0, y0, x1, y1 = bbox
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape == shape:
        return image.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].clamp_(0.0, 1.0).numpy()


def preprocess_image(
    pixels: np.ndarray,
    config: PreprocessConfig,
    boxes: Any | None = None,
    laterality: str | None = None,
) -> tuple[np.ndarray, GeometricTransform, np.ndarray | None]:
    """Flip, trim, crop, resize and pad one image (see module docstring).

    Args:
        pixels: float (H0, W0) in [0, 1], bright = dense.
        config: the preprocessing settings.
        boxes: optional original-image ``xyxy`` boxes ``(N, 4)``.
        laterality: ``"L"``/``"R"``; needed with ``flip_right`` and for the padding side.

    Returns:
        ``(image, transform, boxes_out)``: float32 ``config.size`` image in [0, 1], the transform,
        and the boxes in output pixels clipped to the image content (``None`` without ``boxes``).

    Raises:
        ValueError: not a 2-D image, or ``flip_right`` without a known laterality.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"pixels must be a non-empty 2-D image, got shape {pixels.shape}")
    if laterality not in (None, "L", "R"):
        raise ValueError(f"laterality must be 'L', 'R' or None, got {laterality!r}")
    if config.flip_right and laterality is None:
        raise ValueError("flip_right needs the image's laterality")
    flipped = config.flip_right and laterality == "R"
    image = np.array(pixels[:, ::-1] if flipped else pixels, dtype=np.float32)
    height, width = image.shape
    ty, tx = round(config.border_trim * height), round(config.border_trim * width)
    if ty or tx:
        image[:ty], image[height - ty :], image[:, :tx], image[:, width - tx :] = 0, 0, 0, 0

    x0, y0, x1, y1 = _crop_box(image, config)
    out_h, out_w = config.size
    scale = min(out_h / (y1 - y0), out_w / (x1 - x0))
    new_h = min(out_h, max(1, round((y1 - y0) * scale)))
    new_w = min(out_w, max(1, round((x1 - x0) * scale)))
    chest_wall_right = laterality == "R" and not flipped
    pad_left = out_w - new_w if chest_wall_right else 0

    output = np.zeros(config.size, dtype=np.float32)
    output[:new_h, pad_left : pad_left + new_w] = _resize(image[y0:y1, x0:x1], (new_h, new_w))
    transform = GeometricTransform(
        original_shape=(height, width),
        flipped=flipped,
        crop=(x0, y0, x1, y1),
        resized_shape=(new_h, new_w),
        pad=(pad_left, 0),
        output_shape=config.size,
    )
    boxes_out = None
    if boxes is not None:
        boxes = np.reshape(np.asarray(boxes, dtype=np.float64), (-1, 4))
        boxes_out = transform.clip_boxes(transform.apply_boxes(boxes))
    return output, transform, boxes_out


def load_preprocessed(
    path: str | Path, config: PreprocessConfig, laterality: str | None = None
) -> tuple[np.ndarray, GeometricTransform]:
    """Decode a DICOM with :func:`read_dicom` and :func:`preprocess` it (no boxes).

    Raises:
        DicomError: the file cannot be read (see :func:`read_dicom`).
    """
    image, transform, _ = preprocess_image(read_dicom(path).pixels, config, laterality=laterality)
    return image, transform
