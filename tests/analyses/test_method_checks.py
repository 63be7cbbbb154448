"""The method-checks command end to end on the tiny set: one row per method with faithfulness
columns and a randomization verdict, long tables covering every image, curve and stage, the figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyses import method_checks
from mammo_interp import factor
from mammo_interp import methods as registry
from mammo_interp.faithfulness import FRACTIONS


@pytest.mark.slow
def test_every_method_gets_both_checks(tiny_masses, tiny_checkpoint, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    methods = ("factor", "mean_channels", "gradcam", "breast_prior")
    method_checks.main(["--data", str(tiny_masses), "--checkpoint", str(tiny_checkpoint), "--image-size", "128", "80",
                        "--layers", "head", "--methods", *methods, "--images", "2", "--no-progress", "--n-boot", "20",
                        "--validation-fraction", "0.2", "--seed", "1",
                        "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports")])
    reports = tmp_path / "reports"
    table = pd.read_csv(reports / "mass_head.csv")
    names = [registry.get(m).label for m in methods]
    assert list(table["method"]) == names
    assert table.set_index("method").loc["breast prior", "randomization check"] == "FAILS"  # blind to the model
    faithful = pd.read_csv(reports / "mass_head_faithfulness_long.csv")
    assert faithful.groupby("method", sort=False).size().to_dict() == {name: 2 for name in names}
    first = faithful.iloc[0]
    assert first["difference"] == pytest.approx(first["insertion_auc"] - first["deletion_auc"])
    assert len(json.loads(first["deletion_curve"])) == len(FRACTIONS)
    randomized = pd.read_csv(reports / "mass_head_randomization_long.csv")
    assert randomized.groupby("method")["depth"].max().eq(randomized["depth"].max()).all()
    for name in ("mass_head.md", "mass_head.tex", "mass_head_randomization.png", "mass_head_randomization.pdf"):
        assert (reports / name).is_file(), name


def test_images_and_methods_are_checked_while_parsing(capsys):
    for argv, message in ((["--images", "0"], "--images must be at least 1"), (["--methods", "nope"], "nope")):
        with pytest.raises(SystemExit) as stop:
            method_checks.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_summary_table_names_flat_maps_instead_of_printing_nan():
    faithful = pd.DataFrame({"method": ["A", "A", "B", "B"], "deletion_auc": [0.2, 0.4, 0.3, 0.3],
                             "insertion_auc": [0.5, 0.7, 0.3, 0.4], "difference": [0.3, 0.3, 0.0, 0.1]})
    verdict = pd.DataFrame({"method": ["A", "B"], "spearman": [float("nan"), 0.61], "ssim": [0.4, 0.9],
                            "passes": [True, False]})
    table = method_checks.summary_table(faithful, verdict, n_boot=20, seed=0).set_index("method")
    assert table.loc["A", "Spearman, all randomized"] == "flat maps" and table.loc["A", "randomization check"] == "passes"
    assert table.loc["B", "Spearman, all randomized"] == "0.61" and table.loc["B", "randomization check"] == "FAILS"
    assert table.loc["A", "insertion - deletion"].startswith("0.300")
