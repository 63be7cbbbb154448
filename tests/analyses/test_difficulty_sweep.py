"""The difficulty sweep trains one reference per generated set, reuses finished runs, and applies
its selection rule on validation AUROC only."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import models.reference as reference_module
from analyses import difficulty_sweep
from models.data.synth import SynthConfig
from models.metrics import Estimate


def test_chosen_difficulty_is_the_hardest_that_reaches_the_target_on_validation():
    rows = [{"difficulty": 0.0, "val Mass AUROC": 0.97}, {"difficulty": 0.2, "val Mass AUROC": 0.96},
            {"difficulty": 0.5, "val Mass AUROC": 0.80, "test Mass AUROC": Estimate(0.99, 0.98, 1.0, 10)}]
    assert difficulty_sweep.chosen_difficulty(rows, 0.95) == 0.2  # test AUROC plays no part
    assert difficulty_sweep.chosen_difficulty(rows, 0.99) is None


@pytest.mark.slow
def test_sweep_writes_table_figure_and_reuses_finished_runs(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(difficulty_sweep, "synthetic_set", lambda config, k: SynthConfig(
        n_studies=16, seed=3 + k, image_height=256, difficulty=config.difficulties[k]))
    args = ["--difficulties", "0.6", "0.1", "--reference-epochs", "1", "--reference-batch-size", "4",
            "--reference-image-size", "128", "80", "--reference-findings", "Mass",
            "--reference-validation-fraction", "0.2", "--reference-n-boot", "10", "--no-reference-progress",
            "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports")]
    frame = difficulty_sweep.main(args)
    assert list(frame["difficulty"]) == [0.1, 0.6]  # sorted, whatever the listed order
    for suffix in ("md", "csv", "tex", "png", "pdf", "json"):
        assert (tmp_path / "reports" / f"difficulty_sweep.{suffix}").is_file()
    record = json.loads((tmp_path / "reports" / "difficulty_sweep.json").read_text())
    assert "chosen_difficulty" in record and len(record["rows"]) == 2
    assert {"val Mass AUROC", "test Mass AUROC"} <= set(pd.read_csv(tmp_path / "reports" / "difficulty_sweep.csv"))

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(reference_module, "augment", no_training)
    again = difficulty_sweep.main(args)
    pd.testing.assert_frame_equal(frame, again)


def test_difficulties_out_of_range_are_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        difficulty_sweep.main(["--difficulties", "1.5"])
    assert "difficulties must be in [0, 1]" in capsys.readouterr().err


def test_replot_redraws_the_committed_sweep_without_training(tmp_path, monkeypatch):
    committed = Path(__file__).resolve().parents[2] / "reports" / "reference" / "difficulty_sweep.csv"
    drawn = []
    monkeypatch.setattr(difficulty_sweep, "plot_sweep", lambda rows, findings, target: drawn.append(
        (rows, findings, target)) or plt.figure())
    monkeypatch.setattr(difficulty_sweep, "train_reference", lambda *_: pytest.fail("--replot trained"))
    difficulty_sweep.main(["--replot", str(committed), "--report-dir", str(tmp_path), "--target", "0.9"])
    (rows, findings, target), = drawn
    assert findings == ("Mass", "Suspicious Calcification") and target == 0.9
    first = rows[0]["test Mass AUROC"]
    assert (first.value, first.low, first.high) == (0.967, 0.950, 0.981)  # the cell "0.967 (0.950–0.981)"
    assert (tmp_path / "difficulty_sweep.png").is_file() and (tmp_path / "difficulty_sweep.pdf").is_file()


def test_replot_without_a_table_names_it(tmp_path):
    with pytest.raises(SystemExit, match="--replot: no such table .*sweep.csv"):
        difficulty_sweep.main(["--replot", str(tmp_path / "sweep.csv"), "--report-dir", str(tmp_path)])
