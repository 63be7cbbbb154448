"""Dataset entry: layout detection, split carving (validation, and test where absent), subsampling."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import models.data.sources as sources
from models.data.errors import DataError
from models.data.reading import DataQuirkWarning, ReadOptions
from models.data.sources import TEST, VALIDATION, load_splits, read_table, subsample_studies
from models.data.vindr import read_vindr


def test_layout_detection(vindr_root, rsna_root, tmp_path):
    assert set(read_table(vindr_root)["dataset"]) != set(read_table(rsna_root)["dataset"])
    with pytest.raises(DataError, match="breast-level_annotations.csv"):
        read_table(tmp_path)


def test_rsna_gets_a_test_split_carved_by_patient(rsna_root, monkeypatch):
    carved = []
    real = sources.with_validation_split

    def spy(table, fraction, seed, **kwargs):
        carved.append(kwargs.get("name", VALIDATION))
        return real(table, fraction, seed, **kwargs)

    monkeypatch.setattr(sources, "with_validation_split", spy)
    with pytest.raises(DataError, match="empty"):  # the fixture has too few patients for three splits
        load_splits(rsna_root, validation_fraction=0.34)
    assert carved == [TEST, VALIDATION]


def test_missing_split_is_a_clear_error(vindr_root):
    with pytest.raises(DataError, match="empty"):
        load_splits(vindr_root, validation_fraction=0.0)


def test_subsample_keeps_whole_studies_deterministically():
    table = pd.DataFrame({"study_id": [s for s in "abcdefghij" for _ in range(4)], "x": range(40)})
    half = subsample_studies(table, 0.5, seed=3)
    assert half["study_id"].nunique() == 5 and len(half) == 20
    assert half.equals(subsample_studies(table, 0.5, seed=3))
    assert subsample_studies(table, 1.0, seed=3) is table
    with pytest.raises(ValueError):
        subsample_studies(table, 0.0, seed=3)


def test_progress_flag_reaches_default_dataset_generation(tiny_masses, monkeypatch):
    asked = []

    def root(data, progress=True):
        asked.append(progress)
        return tiny_masses

    monkeypatch.setattr(sources, "default_data_root", root)
    load_splits(None, validation_fraction=0.2, seed=1, progress=False)
    assert asked == [False]


@pytest.fixture
def partial_download(tiny_masses, tmp_path):
    """A copy of the tiny synthetic set whose first listed image is missing on disk."""
    root = tmp_path / "partial"
    shutil.copytree(tiny_masses, root)
    first = read_table(root).iloc[0]
    Path(first["path"]).unlink()
    return root, first["image_id"]


def test_reading_options_reach_the_reader(partial_download):
    root, missing = partial_download
    with pytest.warns(DataQuirkWarning, match="skipped 1 of"):
        splits = load_splits(root, validation_fraction=0.2, reading=ReadOptions(skip_missing_images=True))
    kept = pd.concat([splits.train, splits.validation, splits.test])
    assert missing not in set(kept["image_id"]) and len(kept) == len(read_vindr(root, check_files=False)) - 1


@pytest.mark.slow
def test_an_entry_point_names_the_partial_download_flag(partial_download, tmp_path):
    root, _ = partial_download
    done = subprocess.run([sys.executable, "-m", "models.reference", "--data", str(root), "--out", str(tmp_path),
                           "--report-dir", str(tmp_path / "reports"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    *warnings, error = done.stderr.strip().splitlines()  # repaired quirks of the tiny set come first
    assert all(w.startswith("python -m models.reference: warning: ") for w in warnings)
    assert error.startswith("python -m models.reference: error: ") and "--skip-missing-images" in error
