"""The check set: a small synthetic set of its own (not the default set's splits) on which every
shipped model's card records metrics, so a test can regenerate it in seconds and check a shipped
file against its card."""

from __future__ import annotations

import pandas as pd

from models.data.default import DEFAULT_SYNTH, default_data_root
from models.data.sources import Splits, load_splits
from models.data.synth import SynthConfig

CHECK_SET = SynthConfig(n_studies=100, seed=9001, difficulty=DEFAULT_SYNTH.difficulty)


def check_set_splits(validation_fraction: float = 0.1) -> Splits:
    """:data:`CHECK_SET`'s training, validation (``validation_fraction`` of the training studies) and test
    tables (generated into the cache on first use)."""
    return load_splits(default_data_root(None, CHECK_SET, progress=False), validation_fraction, progress=False)


def check_set_table() -> pd.DataFrame:
    """Every image of :data:`CHECK_SET`."""
    splits = check_set_splits()
    return pd.concat([splits.train, splits.validation, splits.test], ignore_index=True)
