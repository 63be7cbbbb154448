"""Report tables: CSV round trip, markdown shape, escaped booktabs LaTeX, atomic writes."""

import math

import pandas as pd
import pytest

from models.metrics import Estimate
from models.report_tables import ci_frame, ci_long_frame, write_table

ROWS = {
    "CLIP_base": {
        "auroc": Estimate(0.8123, 0.79, 0.8344, 1000),
        "macro_f1": Estimate(0.6, 0.5, 0.7, 998),
    },
    "ours | 50%": {
        "auroc": Estimate(math.nan, math.nan, math.nan, 0),
        "recall": Estimate(0.4, 0.3, 0.5, 1000),
    },
}


@pytest.fixture
def written(tmp_path):
    frame = ci_frame(ROWS)
    stem = tmp_path / "tables" / "zero_shot"
    caption = "Zero-shot AUROC, 95% CI \u2013 test_set"
    paths = write_table(frame, stem, caption=caption, label="tab:zs")
    return frame, paths


def test_ci_frame_cells_and_missing_metrics():
    frame = ci_frame(ROWS, row_label="model", digits=2)
    assert list(frame.columns) == ["model", "auroc", "macro_f1", "recall"]
    assert frame.loc[0].tolist() == [
        "CLIP_base",
        "0.81 (0.79\u20130.83)",
        "0.60 (0.50\u20130.70)",
        "",
    ]
    assert frame.loc[1, "auroc"] == "n/a" and frame.loc[1, "macro_f1"] == ""
    assert list(ci_frame({}).columns) == ["method"]


def test_ci_long_frame_is_numeric():
    long = ci_long_frame(ROWS)
    assert list(long.columns) == ["method", "metric", "value", "low", "high", "n_boot"]
    assert long.shape == (4, 6)
    first = long.iloc[0]
    assert (first["method"], first["metric"], first["value"], first["n_boot"]) == (
        "CLIP_base", "auroc", 0.8123, 1000
    )
    assert math.isnan(long.iloc[2]["value"])


def test_writes_three_files_and_no_temporary(written, tmp_path):
    _, paths = written
    assert [p.name for p in paths] == ["zero_shot.csv", "zero_shot.md", "zero_shot.tex"]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(p.name for p in paths)


def test_csv_round_trip(written):
    frame, paths = written
    # keep_default_na: "n/a" and "" are cell text here, not missing values.
    back = pd.read_csv(paths[0], keep_default_na=False, encoding="utf-8")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_markdown_table(written):
    frame, paths = written
    lines = paths[1].read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["Zero-shot AUROC, 95% CI \u2013 test_set", ""]
    assert lines[2] == "| method | auroc | macro_f1 | recall |"
    assert lines[3] == "|---|---|---|---|"
    assert len(lines) == 4 + len(frame)
    assert "0.812 (0.790\u20130.834)" in lines[4] and lines[5].startswith("| ours \\| 50% |")


def test_latex_booktabs_escaped(written):
    _, paths = written
    tex = paths[2].read_text(encoding="utf-8")
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert "\\caption{Zero-shot AUROC, 95\\% CI -- test\\_set}" in tex and "\\label{tab:zs}" in tex
    assert "macro\\_f1" in tex and "CLIP\\_base" in tex and "ours \\textbar{} 50\\%" in tex


def test_latex_en_dash(written):
    _, paths = written
    tex = paths[2].read_text(encoding="utf-8")
    assert "0.812 (0.790--0.834)" in tex and "\u2013" not in tex


def test_latex_escapes_specials_and_keeps_other_cells(tmp_path):
    frame = pd.DataFrame(
        {"a & b": ["x_1", "#2 $3"], "value %": [1.5, math.nan], "~^": ["{\\}", ""]}
    )
    _, md, tex = write_table(frame, tmp_path / "t")
    text = tex.read_text(encoding="utf-8")
    assert "a \\& b & value \\% & \\textasciitilde{}\\textasciicircum{} \\\\" in text
    assert "x\\_1 & 1.5 & \\{\\textbackslash{}\\} \\\\" in text
    assert "\\#2 \\$3 &  &  \\\\" in text
    assert "\\caption" not in text
    lines = md.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| a & b | value % | ~^ |" and lines[3] == "| #2 $3 |  |  |"


def test_overwrite_replaces_content(tmp_path):
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "t")
    csv, _, _ = write_table(pd.DataFrame({"a": [2, 3]}), tmp_path / "t")
    assert pd.read_csv(csv)["a"].tolist() == [2, 3]
    assert len(list(tmp_path.iterdir())) == 3
