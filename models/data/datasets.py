"""Torch datasets over the per-image table: one image, one breast (CC + MLO), one exam (4 views).

Every item is a dict. A view contributes ``image`` float32 ``(1, H, W)`` in [0, 1] (bright = dense),
``boxes`` float32 ``(N, 4)`` pixel ``xyxy`` in *output* (preprocessed) coordinates, clipped to the
image content, ``box_labels`` int64 ``(N,)`` indices into ``schema.FINDING_CATEGORIES``, one entry
per label encoder (int64 class index or float32 multi-hot; missing = ``labels.IGNORE_INDEX``), the
ids, ``laterality``, ``view`` and ``transform`` (``GeometricTransform.to_dict()``, to map predicted
boxes back with ``GeometricTransform.from_dict(d).invert_boxes``).

Multi-view items stack views in a fixed slot order (:data:`BREAST_VIEWS`, :data:`EXAM_VIEWS`):
``image`` ``(V, 1, H, W)`` with a bool ``mask`` ``(V,)`` (False = view missing, image zeros, labels
IGNORE_INDEX, no boxes), labels stacked per view ``(V,)``/``(V, C)``, and ``boxes``/``box_labels``/
``image_id``/``transform`` as length-V lists. Breast-level labels (BI-RADS, density, malignancy)
repeat across a breast's views. When a slot has several images (RSNA repeats views), the first in
table order is used; non-CC/MLO views never fill a slot.

The optional ``transform`` callable (augmentation) receives each view's item dict and returns it,
before multi-view stacking; it owns any randomness (no global reseeding here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from models.data.cache import PreprocessCache
from models.data.errors import DataError, TableError
from models.data.labels import DEFAULT_LABELS, LabelEncoder, LabelError, MultiHotEncoder
from models.data.preprocess import GeometricTransform, PreprocessConfig, load_preprocessed
from models.data.schema import FINDING_CATEGORIES, VIEWS

EXAM_VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
BREAST_VIEWS: tuple[str, ...] = VIEWS  # ("CC", "MLO")
RAGGED_KEYS = frozenset({"boxes", "box_labels"})
_CATEGORY_INDEX = {c: i for i, c in enumerate(FINDING_CATEGORIES)}
_REQUIRED_COLUMNS = ("path", "study_id", "image_id", "laterality", "view", "boxes")

Encoder = LabelEncoder | MultiHotEncoder
ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]


class _TableDataset(Dataset):
    """Loading and labelling of single views, shared by the three datasets."""

    def __init__(
        self,
        table: pd.DataFrame,
        config: PreprocessConfig | None = None,
        cache: PreprocessCache | None = None,
        labels: Mapping[str, Encoder] | None = None,
        transform: ItemTransform | None = None,
    ) -> None:
        if cache is not None and config is not None and config != cache.config:
            raise ValueError(f"config {config} differs from the cache's config {cache.config}")
        self.config = cache.config if cache is not None else (config or PreprocessConfig())
        self.cache = cache
        self.labels = dict(DEFAULT_LABELS if labels is None else labels)
        self.transform = transform
        required = {*_REQUIRED_COLUMNS, *(enc.column for enc in self.labels.values())}
        missing = sorted(required - set(table.columns))
        if missing:
            raise TableError(
                "per-image table", f"missing columns {missing}", "a read_vindr/read_rsna table"
            )
        self.table = table.reset_index(drop=True)
        self._check_labels()

    def _check_labels(self) -> None:
        """Encode every label once now, so a bad value fails here, not deep inside an epoch."""
        for encoder in self.labels.values():
            for image_id, value in zip(self.table["image_id"], self.table[encoder.column]):
                try:
                    encoder.encode(value)
                except LabelError as exc:
                    where = f"per-image table, image_id {image_id!r}, column {encoder.column!r}"
                    raise LabelError(where, exc.problem, exc.expected) from exc

    def fill_cache(self, workers: int | None = None, progress: bool = True) -> int:
        """Preprocess every image of the table into ``cache`` in parallel (see
        :meth:`PreprocessCache.fill`); returns how many were built. A no-op without a cache."""
        if self.cache is None:
            return 0
        return self.cache.fill(((p, _laterality(lat)) for p, lat in zip(self.table["path"], self.table["laterality"])),
                               workers=workers, progress=progress)

    def _load(self, row: pd.Series) -> tuple[np.ndarray, GeometricTransform]:
        laterality = _laterality(row["laterality"])
        if self.cache is not None:
            image, transform = self.cache.get(row["path"], laterality)
        else:
            image, transform = load_preprocessed(row["path"], self.config, laterality)
        expected = tuple(row.get(k) for k in ("height", "width"))
        if all(isinstance(v, (int, np.integer)) for v in expected):
            if transform.original_shape != expected:
                height, width = transform.original_shape
                raise DataError(
                    row["path"],
                    f"decoded image is {height} x {width}",
                    f"{expected[0]} x {expected[1]} (height x width) as in the table",
                )
        return image, transform

    def _view_item(self, index: int) -> dict[str, Any]:
        row = self.table.iloc[index]
        image, transform = self._load(row)
        boxes = list(row["boxes"])
        coords = np.array([b[:4] for b in boxes], dtype=np.float64).reshape(-1, 4)
        out = transform.clip_boxes(transform.apply_boxes(coords))
        item = {
            "image": torch.from_numpy(image)[None],
            "boxes": torch.from_numpy(out.astype(np.float32)),
            "box_labels": torch.tensor([_CATEGORY_INDEX[b[4]] for b in boxes], dtype=torch.long),
            **{n: _label_tensor(e, e.encode(row[e.column])) for n, e in self.labels.items()},
            "image_id": str(row["image_id"]),
            "study_id": str(row["study_id"]),
            "laterality": str(row["laterality"]),
            "view": str(row["view"]),
            "transform": transform.to_dict(),
        }
        return self.transform(item) if self.transform is not None else item

    def _empty_view(self, laterality: str, view: str) -> dict[str, Any]:
        return {
            "image": torch.zeros((1, *self.config.size), dtype=torch.float32),
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "box_labels": torch.zeros(0, dtype=torch.long),
            **{n: _label_tensor(e, e.encode(None)) for n, e in self.labels.items()},
            "image_id": "",
            "laterality": laterality,
            "view": view,
            "transform": None,
        }


def _laterality(value: Any) -> str | None:
    """The laterality preprocessing orients by (None when the table has no usable one)."""
    return value if value in ("L", "R") else None


def _label_tensor(encoder: Encoder, value: Any) -> torch.Tensor:
    if isinstance(encoder, MultiHotEncoder):
        return torch.from_numpy(np.asarray(value, dtype=np.float32))
    return torch.tensor(value, dtype=torch.long)


class ImageDataset(_TableDataset):
    """One image per item (every row of the table, in order).

    Args:
        table: per-image table (:func:`read_vindr`, :func:`read_rsna`), possibly filtered.
        config: preprocessing (default :class:`PreprocessConfig`); must match ``cache.config``.
        cache: decode each DICOM once and reuse it (:class:`PreprocessCache`).
        labels: item key -> encoder (default :data:`labels.DEFAULT_LABELS`).
        transform: augmentation on the item dict.
    """

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._view_item(index)


class _MultiViewDataset(_TableDataset):
    """Rows grouped by ``group_columns``; each group fills the slots that :meth:`_slots` names."""

    group_columns: tuple[str, ...] = ()

    def __init__(
        self,
        table: pd.DataFrame,
        config: PreprocessConfig | None = None,
        cache: PreprocessCache | None = None,
        labels: Mapping[str, Encoder] | None = None,
        transform: ItemTransform | None = None,
    ) -> None:
        super().__init__(table, config, cache, labels, transform)
        self.groups: list[tuple[tuple[Any, ...], list[int | None]]] = []
        position_of: dict[tuple[Any, ...], int] = {}
        for index, row in enumerate(self.table.itertuples(index=False)):
            key = tuple(getattr(row, c) for c in self.group_columns)
            slots = self._slots(key)
            if (row.laterality, row.view) not in slots:
                continue
            if key not in position_of:
                position_of[key] = len(self.groups)
                self.groups.append((key, [None] * len(slots)))
            members = self.groups[position_of[key]][1]
            slot = slots.index((row.laterality, row.view))
            if members[slot] is None:
                members[slot] = index

    def _slots(self, key: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
        """The (laterality, view) slots of the group ``key``, in item order."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key, members = self.groups[index]
        slots = self._slots(key)
        views = [
            self._view_item(i) if i is not None else self._empty_view(*slot)
            for i, slot in zip(members, slots)
        ]
        item: dict[str, Any] = {
            "image": torch.stack([v["image"] for v in views]),
            "mask": torch.tensor([i is not None for i in members], dtype=torch.bool),
            "boxes": [v["boxes"] for v in views],
            "box_labels": [v["box_labels"] for v in views],
            **{name: torch.stack([v[name] for v in views]) for name in self.labels},
            "image_id": [v["image_id"] for v in views],
            "views": [f"{lat}-{view}" for lat, view in slots],
            "transform": [v["transform"] for v in views],
        }
        item.update(zip(self.group_columns, key))
        return item


class BreastDataset(_MultiViewDataset):
    """One breast per item: its CC and MLO views in :data:`BREAST_VIEWS` order, with ``mask``.

    Arguments as :class:`ImageDataset`. Items also carry ``study_id`` and ``laterality``.
    """

    group_columns = ("study_id", "laterality")

    def _slots(self, key: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
        return tuple((key[1], view) for view in BREAST_VIEWS)


class ExamDataset(_MultiViewDataset):
    """One exam (study) per item: up to four views in :data:`EXAM_VIEWS` order, with ``mask``.

    Arguments as :class:`ImageDataset`. Items also carry ``study_id``.
    """

    group_columns = ("study_id",)

    def _slots(self, key: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
        return EXAM_VIEWS


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors of equal shape are stacked; ``boxes``/``box_labels`` (variable counts),
    strings, transform dicts and per-view lists become lists of length B.

    Use as ``DataLoader(dataset, batch_size=..., collate_fn=collate)``.
    """
    if not batch:
        raise ValueError("empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key not in RAGGED_KEYS and all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
