"""One split of a dataset read into memory as tensors: the input of the Python attribution API.

Images are preprocessed exactly as every command sees them (breast crop, resize to ``size``, pad;
the shared on-disk preprocessing cache is used), boxes are in those preprocessed pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from models.data.datasets import ImageDataset
from models.data.schema import FINDING_CATEGORIES
from models.data.sources import preprocess_cache
from models.text import attribute_category


@dataclass
class SplitTensors:
    """Images of one split with their findings.

    Attributes:
        images: ``(N, 1, H, W)`` float32 in [0, 1] (bright = dense), what the encoders take.
        image_ids: ``N`` image ids, in table order.
        boxes: per image ``(G, 4)`` float32 ``xyxy`` ground-truth boxes in preprocessed pixels
            (exclusive max edges).
        box_labels: per image ``(G,)`` finding names (:data:`models.data.schema.FINDING_CATEGORIES`).
    """

    images: torch.Tensor
    image_ids: list[str]
    boxes: list[np.ndarray]
    box_labels: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.image_ids)

    def boxes_of(self, attribute: str) -> list[np.ndarray]:
        """Per image, the ``(G, 4)`` boxes of one finding (``(0, 4)`` where it is absent); ``attribute``
        as :func:`models.text.attribute_category` reads it ("mass", "suspicious calcification", ...)."""
        category = attribute_category(attribute)
        return [boxes[labels == category].reshape(-1, 4) for boxes, labels in zip(self.boxes, self.box_labels)]

    def has(self, attribute: str) -> np.ndarray:
        """``(N,)`` bool: the image has at least one box of the finding (its image-level label)."""
        return np.array([len(boxes) > 0 for boxes in self.boxes_of(attribute)])


def split_tensors(table: pd.DataFrame, size: Sequence[int], progress: bool = False) -> SplitTensors:
    """Read every image of a per-image table (e.g. one of :func:`models.data.sources.load_splits`'
    splits) at ``size`` = ``(H, W)``."""
    dataset = ImageDataset(table, cache=preprocess_cache(tuple(size)))
    items = [dataset[i] for i in tqdm(range(len(dataset)), desc="images", disable=not progress, leave=False)]
    return SplitTensors(
        images=torch.stack([item["image"] for item in items]) if items else torch.zeros(0, 1, *size),
        image_ids=[item["image_id"] for item in items],
        boxes=[item["boxes"].numpy().reshape(-1, 4) for item in items],
        box_labels=[np.array([FINDING_CATEGORIES[i] for i in item["box_labels"].tolist()], dtype=object)
                    for item in items],
    )
