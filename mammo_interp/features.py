"""Frozen-encoder feature maps of a split, extracted once and cached on disk.

FActOR trains its mapper and every channel-based heatmap method on the same feature maps; they
are the expensive part (a backbone forward per image), so they are computed once per
(checkpoint, layer, image size, image list) and stored as float16 beside what localization needs:
ground-truth boxes in preprocessed pixel coordinates, breast masks, and the geometric transforms
that map predicted boxes back to the original DICOM pixels.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from models.data.datasets import ImageDataset, collate
from models.data.preprocess import otsu_threshold
from models.device import Precision, loader_options, module_device
from models.encoders import ImageEncoder
from models.io import save_torch
from models.training import eval_mode

FEATURES_FORMAT = "mammo-interp/features-1"
T = TypeVar("T")


def breast_mask(image: np.ndarray, fraction: float = 0.7) -> np.ndarray:
    """Tissue pixels of a preprocessed image (bright = dense): above ``fraction`` × Otsu, the rule
    the breast crop uses, so heatmaps and boxes stay off the air and the padding."""
    return image > fraction * otsu_threshold(image)


@dataclass
class FeatureSet:
    """Feature maps of one split and the per-image facts localization needs.

    Attributes:
        maps: ``(N, C, h, w)`` float16 feature maps of the frozen encoder.
        image_ids: ``N`` image ids, in table order.
        boxes: per image ``(G, 4)`` float32 ground-truth ``xyxy`` boxes in preprocessed pixels
            (max edges exclusive).
        box_labels: per image ``(G,)`` indices into ``schema.FINDING_CATEGORIES``.
        masks: ``(N, H, W)`` bool breast masks at the preprocessed image size.
        transforms: per image ``GeometricTransform.to_dict()`` (preprocessed <-> original pixels).
        layer: the encoder layer the maps come from.
    """

    maps: torch.Tensor
    image_ids: list[str]
    boxes: list[np.ndarray]
    box_labels: list[np.ndarray]
    masks: torch.Tensor
    transforms: list[dict[str, Any]]
    layer: str

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def has_category(self, category_index: int) -> np.ndarray:
        """``(N,)`` bool: the image has at least one box of the category."""
        return np.array([bool((labels == category_index).any()) for labels in self.box_labels])

    def category_boxes(self, category_index: int) -> list[np.ndarray]:
        """Per image, the ``(G, 4)`` boxes of one category (``(0, 4)`` where it is absent)."""
        return [boxes[labels == category_index].reshape(-1, 4)
                for boxes, labels in zip(self.boxes, self.box_labels)]

    def subset(self, rows: Sequence[int]) -> FeatureSet:
        """The images at ``rows`` (positions in this set), in that order."""
        rows = list(rows)
        return FeatureSet(self.maps[rows], [self.image_ids[i] for i in rows], [self.boxes[i] for i in rows],
                          [self.box_labels[i] for i in rows], self.masks[rows], [self.transforms[i] for i in rows],
                          self.layer)

    def to_payload(self) -> dict[str, Any]:
        return {"format": FEATURES_FORMAT, "maps": self.maps, "image_ids": self.image_ids,
                "boxes": [torch.from_numpy(b) for b in self.boxes],
                "box_labels": [torch.from_numpy(b) for b in self.box_labels],
                "masks": self.masks, "transforms": json.dumps(self.transforms), "layer": self.layer}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FeatureSet:
        if payload.get("format") != FEATURES_FORMAT:
            raise ValueError(f"not a {FEATURES_FORMAT} feature file")
        return cls(payload["maps"], list(payload["image_ids"]), [b.numpy() for b in payload["boxes"]],
                   [b.numpy() for b in payload["box_labels"]], payload["masks"],
                   json.loads(payload["transforms"]), payload["layer"])


@torch.no_grad()
def extract_features(encoder: ImageEncoder, dataset: ImageDataset, layer: str | None = None,
                     batch_size: int = 32, progress: bool = True, desc: str = "features",
                     workers: int = 0, precision: Precision | None = None) -> FeatureSet:
    """Feature maps of every image of ``dataset`` at ``layer`` (default: the encoder's own), with
    the encoder in eval mode (its BatchNorm statistics are never updated), computed on the encoder's
    device under ``precision``'s autocast (default float32; ``workers`` DataLoader processes decode the
    images) and kept on the CPU as float16."""
    device = module_device(encoder)
    precision = precision or Precision(device, None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        **loader_options(device, workers))
    maps, masks, ids, boxes, labels, transforms = [], [], [], [], [], []
    with eval_mode(encoder):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            with precision.autocast():
                feature_map = encoder.feature_map(batch["image"].to(device, non_blocking=True), layer)
            maps.append(feature_map.to("cpu", torch.float16))
            images = batch["image"][:, 0].numpy()
            masks.append(torch.from_numpy(np.stack([breast_mask(image) for image in images])))
            ids.extend(batch["image_id"])
            boxes.extend(b.numpy().reshape(-1, 4) for b in batch["boxes"])
            labels.extend(b.numpy() for b in batch["box_labels"])
            transforms.extend(batch["transform"])
    return FeatureSet(torch.cat(maps), ids, boxes, labels, torch.cat(masks), transforms,
                      layer or encoder.config.feature_layer)


def file_fingerprint(path: str | Path) -> str:
    """Identity of a file for cache keys: resolved path, size and modification time."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def digest(value: Any) -> str:
    """Short stable hash of a JSON-able value (tuples as lists, other objects by ``str``): cache keys."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def table_fingerprint(table: pd.DataFrame) -> str:
    """Identity of a split for cache keys: its image ids and every ground-truth box (category included),
    so a changed split, box policy or annotation file never reuses an old artefact."""
    return digest([list(table["image_id"].astype(str)), [list(map(list, b)) for b in table["boxes"]]])


def load_or_compute(path: Path, compute: Callable[[], T], encode: Callable[[T], dict[str, Any]],
                    decode: Callable[[dict[str, Any]], T]) -> T:
    """``decode`` of the payload cached at ``path``, else ``compute()`` written there atomically as
    ``encode`` gives it: the one rule of the feature and embedding caches (a corrupt, truncated or
    foreign file, which ``decode`` refuses with ValueError/KeyError/TypeError, is recomputed)."""
    if path.is_file():
        try:
            return decode(torch.load(path, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
            pass  # recomputed below
    value = compute()
    save_torch(path, encode(value))
    return value


def cached_features(cache_dir: Path, key: dict[str, Any], encoder: ImageEncoder, dataset: ImageDataset,
                    layer: str, batch_size: int = 32, progress: bool = True, desc: str = "features",
                    precision: Precision | None = None, workers: int = 0) -> FeatureSet:
    """:func:`extract_features` through a file cache named by the hash of ``key`` plus the dataset's
    images and boxes and the precision (default float32)."""
    precision = precision or Precision(module_device(encoder), None)
    key = {**key, "layer": layer, "table": table_fingerprint(dataset.table), "preprocess": dataset.config.to_dict(),
           **precision.cache_key()}
    return load_or_compute(Path(cache_dir) / f"features-{digest(key)}.pt",
                           lambda: extract_features(encoder, dataset, layer, batch_size, progress, desc, workers,
                                                    precision),
                           FeatureSet.to_payload, FeatureSet.from_payload)
