"""Image-text pairs for contrastive pretraining, and the zero-shot checks read on them.

:class:`PairedText` adds label-synthesized (or report) text to the items of an image, breast or exam
dataset, with a canonical text per sample so that samples of equal labels are positives for each
other; :func:`validation_zero_shot` and :func:`dataset_zero_shot` give the finding and density
AUROCs that pretraining logs each epoch and model cards record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from models.clip import ClipModel
from models.data.datasets import BreastDataset, ExamDataset, ImageDataset, collate
from models.data.labels import DENSITY, IGNORE_INDEX
from models.device import loader_options, module_device
from models.metrics import auroc, auroc_ovr
from models.sampling import finding_targets
from models.text import FINDING_TASKS, class_prompts, synthesize_report


def row_text(row: pd.Series, source: str, rng: np.random.Generator | None) -> str:
    """The text paired with one image row; ``rng=None`` gives the canonical (validation) text."""
    report = row.get("report")
    has_report = isinstance(report, str) and bool(report.strip())
    if source == "reports" or (source == "both" and has_report and rng is not None and rng.random() < 0.5):
        if not has_report:
            raise ValueError(f"image {row['image_id']!r} has no report; use --text-source prompts")
        return report
    return synthesize_report(row, rng)


class PairedText(Dataset):
    """Adds ``text`` and ``text2`` (two augmentations) to the items of an image/breast/exam dataset,
    and ``text_key``, the canonical text: samples with equal keys have equal labels, so their texts
    are positives for each other in the loss (not false negatives, whatever the phrasing).

    Text draws are seeded by ``(seed, epoch, index)``: the same epoch gives the same texts in any
    process or after a resume. ``epoch=None`` gives the canonical text twice.
    """

    def __init__(self, base: ImageDataset | BreastDataset | ExamDataset, source: str, seed: int) -> None:
        self.base, self.source, self.seed = base, source, seed
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.base)

    def _positions(self, index: int) -> list[int]:
        """Table rows (positions) of sample ``index``: its image, or its breast's/exam's views."""
        if isinstance(self.base, ImageDataset):
            return [index]
        return [m for m in self.base.groups[index][1] if m is not None]

    def _rows(self, index: int) -> list[pd.Series]:
        return [self.base.table.iloc[m] for m in self._positions(index)]

    def _text(self, rows: list[pd.Series], rng: np.random.Generator | None) -> str:
        if isinstance(self.base, ExamDataset):
            first_per_breast = {}
            for row in rows:
                first_per_breast.setdefault(row["laterality"], row)
            return " ".join(row_text(first_per_breast[side], self.source, rng)
                            for side in ("R", "L") if side in first_per_breast)
        return row_text(rows[0], self.source, rng)

    def finding_targets(self, findings: tuple[str, ...]) -> np.ndarray:
        """``(len, K)`` 0/1: does any image of each sample carry each finding (balanced sampling)."""
        rows = finding_targets(self.base.table, findings)
        return np.stack([rows[self._positions(i)].max(0) for i in range(len(self))]) if len(self) else rows[:0]

    def first_view_values(self, column: str) -> list[Any]:
        """Each sample's ``column`` from its first present view (a breast's views share density)."""
        return [self._rows(i)[0][column] for i in range(len(self))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        rows = self._rows(index)
        item["text_key"] = self._text(rows, None)
        if self.epoch is None:
            item["text"] = item["text2"] = item["text_key"]
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            item["text"], item["text2"] = self._text(rows, rng), self._text(rows, rng)
        return item


@torch.no_grad()
def validation_zero_shot(clip: ClipModel, image: torch.Tensor, dataset: PairedText) -> dict[str, float]:
    """Zero-shot AUROCs of the normalized sample embeddings ``image`` (in ``dataset``'s order), one
    sentence prompt per class. Per finding task (``val_zeroshot_<task>``): the cosine to the finding
    sentence minus the cosine to its negation, against "any view carries the finding". Density
    (``val_zeroshot_density``): macro one-vs-rest AUROC of the softmax over the four density sentences
    at the learned logit scale, against the first view's density. NaN where a class is missing."""
    targets = dataset.finding_targets(tuple(FINDING_TASKS.values()))
    scores = {}
    for k, task in enumerate(FINDING_TASKS):
        negative, positive = (clip.encode_text(p).mean(0) for p in class_prompts(task).values())
        scores[f"val_zeroshot_{task}"] = auroc(targets[:, k], (image @ (positive - negative)).cpu().numpy())
    classes = torch.stack([clip.encode_text(p).mean(0) for p in class_prompts("density").values()])
    probs = torch.softmax(clip.logit_scale() * image @ classes.T, dim=-1).cpu().numpy()
    density = np.array([DENSITY.encode(v) for v in dataset.first_view_values(DENSITY.column)])
    known = density != IGNORE_INDEX
    per_class = auroc_ovr(density[known], probs[known])
    scores["val_zeroshot_density"] = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return scores


@torch.no_grad()
def dataset_zero_shot(clip: ClipModel, dataset: PairedText, batch_size: int = 32) -> dict[str, float]:
    """:func:`validation_zero_shot` over a whole image-level ``dataset``, embedding it here (model
    cards, shipped-weight checks); keys keep the ``val_zeroshot_`` prefix."""
    clip.eval()
    device = module_device(clip)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **loader_options(device))
    image = torch.cat([clip.encode_image(batch["image"].to(device)) for batch in loader])
    return validation_zero_shot(clip, image, dataset)
