"""The summary joins the variants and checks tables by method, published FActOR by its two names."""

from __future__ import annotations

import pandas as pd
import pytest

from analyses import localization_summary as summary
from analyses.factor_variants import PUBLISHED


def _write(folder, name, frame):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)


def test_methods_are_joined_by_name_and_only_studies_with_both_tables_count(tmp_path):
    variants = pd.DataFrame({"method": [PUBLISHED, "LayerCAM"], "setting": ["paper", "q 0.9"],
                             "IoU-hit@0.25": ["0.2", "0.6"], "AP@0.25": ["0.01", "0.05"],
                             "pointing game": ["0.3", "0.7"]})
    checks = pd.DataFrame({"method": ["FActOR top-k", "LayerCAM", "Integrated Gradients"],
                           "insertion - deletion": ["0.01", "0.03", "0.02"],
                           "randomization check": ["passes", "passes", "FAILS"]})
    _write(tmp_path / "variants", "mass_blocks4.csv", variants)
    _write(tmp_path / "checks", "mass_blocks4.csv", checks)
    _write(tmp_path / "checks", "mass_blocks4_faithfulness_long.csv", pd.DataFrame({"x": [1]}))
    _write(tmp_path / "checks", "mass_head.csv", checks)  # no variants table for head: left out
    speed = pd.DataFrame({"layer": ["blocks.4", "blocks.4", "head"], "method": ["FActOR top-k", "LayerCAM", "LayerCAM"],
                          "boxes / bare forward": ["0.96", "1.61", "1.23"]})
    _write(tmp_path, "speed_cpu.csv", speed)
    table = summary.main(["--variants-dir", str(tmp_path / "variants"), "--checks-dir", str(tmp_path / "checks"),
                          "--report-dir", str(tmp_path / "out"), "--speed-table", str(tmp_path / "speed_cpu.csv")])
    assert list(table["method"]) == [PUBLISHED, "LayerCAM", "Integrated Gradients"]
    assert set(table["layer"]) == {"blocks.4"} and set(table["attribute"]) == {"mass"}
    rows = table.set_index("method")
    assert rows.loc[PUBLISHED, "insertion - deletion"] == "0.01" and rows.loc["LayerCAM", "IoU-hit@0.25"] == "0.6"
    assert rows.loc["Integrated Gradients", "IoU-hit@0.25"] == "" and rows.loc["Integrated Gradients",
                                                                                "randomization check"] == "FAILS"
    assert list(rows[summary.COST_COLUMN]) == ["0.96", "1.61", ""]  # FActOR variants cost FActOR top-k's
    assert (tmp_path / "out" / "summary.md").is_file() and (tmp_path / "out" / "summary.tex").is_file()


def test_no_study_with_both_tables_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="run python -m analyses.factor_variants"):
        summary.summarize(summary.LocalizationSummaryConfig(variants_dir=str(tmp_path / "v"),
                                                            checks_dir=str(tmp_path / "c"),
                                                            report_dir=str(tmp_path)))
