"""One entry to a dataset folder: detect VinDr or RSNA layout, carve the validation split, and set
up the preprocessing cache, so every command (pretrain, fine-tune, FActOR) reads data the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import schema
from models.data.cache import PreprocessCache
from models.data import default
from models.data.default import cache_dir, default_data_root
from models.data.errors import DataError
from models.data.preprocess import PreprocessConfig
from models.data.reading import ReadOptions
from models.data.rsna import read_rsna
from models.data.synth import study_plan
from models.data.tables import VALIDATION_SPLIT, with_validation_split
from models.data.vindr import read_vindr
from models.errors import check_choice

TRAIN, VALIDATION, TEST = "training", VALIDATION_SPLIT, "test"
SPLITS = (TRAIN, VALIDATION, TEST)
RSNA_TRAIN_CSV = "train.csv"


def read_table(root: str | Path, options: ReadOptions = ReadOptions()) -> pd.DataFrame:
    """The per-image table of a VinDr-Mammo (or synthetic) or RSNA folder, detected by its CSVs."""
    root = Path(root)
    if (root / schema.BREAST_LEVEL_CSV).is_file():
        return read_vindr(root, options)
    if (root / RSNA_TRAIN_CSV).is_file():
        return read_rsna(root, options)
    raise DataError(
        root, "no dataset tables found",
        f"a VinDr-Mammo folder ({schema.BREAST_LEVEL_CSV}) or an RSNA folder ({RSNA_TRAIN_CSV})",
    )


@dataclass(frozen=True)
class Splits:
    """Per-split tables of one dataset; validation is carved from training by study."""

    root: Path
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def __getitem__(self, name: str) -> pd.DataFrame:
        return {TRAIN: self.train, VALIDATION: self.validation, TEST: self.test}[name]


def load_splits(data: str | Path | None = None, validation_fraction: float = 0.1,
                seed: int = 0, progress: bool = True, reading: ReadOptions = ReadOptions(),
                needed: Collection[str] = SPLITS) -> Splits:
    """Read ``data`` (default: the embedded synthetic set, generated on first use, with a progress
    bar when ``progress``) into splits; ``reading`` says how real-data quirks are met.

    Datasets without a test split (RSNA) get one carved from training like validation. ``needed``:
    the splits the caller reads. On the embedded set, when training is not among them and the whole
    set is not cached yet, only the needed splits' studies are generated (the same studies, bytes and
    split membership as in the whole set) and the other splits come back empty.
    """
    plan = _evaluation_plan(data, validation_fraction, seed, needed)
    if plan is None:
        root = default_data_root(data, progress=progress)
        table = read_table(root, reading)
        if not (table["split"] == TEST).any():
            table = with_validation_split(table, validation_fraction, seed + 1, name=TEST)
        table = with_validation_split(table, validation_fraction, seed)
    else:
        root = default_data_root(None, progress=progress, studies=plan["index"].tolist())
        table = read_table(root, reading)
        table["split"] = table["study_id"].map(plan.set_index("study_id")["split"])
    parts = {name: table[table["split"] == name].reset_index(drop=True) for name in SPLITS}
    empty = [name for name, part in parts.items() if part.empty and name in needed]
    if empty:
        raise DataError(root, f"splits {empty} are empty ({len(table)} images in all)",
                        "enough studies for training, validation and test")
    return Splits(root, parts[TRAIN], parts[VALIDATION], parts[TEST])


def _evaluation_plan(data: str | Path | None, validation_fraction: float, seed: int,
                     needed: Collection[str]) -> pd.DataFrame | None:
    """The embedded set's studies of the ``needed`` splits with their splits (validation carved
    exactly as from the whole set: the carve ranks training studies by id), when only those need
    generating; None when the whole set is read."""
    check_choice("splits", list(needed), SPLITS)
    if TRAIN in needed or not default.uses_embedded(data) or default.is_complete(default.synthetic_cache_path()):
        return None
    plan = with_validation_split(study_plan(default.DEFAULT_SYNTH), validation_fraction, seed)
    return plan[plan["split"].isin(needed)]


def preprocess_cache(size: tuple[int, int], **options: object) -> PreprocessCache:
    """The shared on-disk cache of preprocessed images at ``size`` (H, W)."""
    config = PreprocessConfig(size=tuple(size), **options)
    return PreprocessCache(cache_dir() / "preprocessed", config)


def subsample_studies(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep ``fraction`` of the studies (all their images), chosen by ``seed`` (data-efficiency runs)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return table
    studies = np.array(sorted(set(table["study_id"])))
    keep = np.random.default_rng(seed).permutation(len(studies))[: max(1, round(fraction * len(studies)))]
    return table[table["study_id"].isin(set(studies[keep]))].reset_index(drop=True)
