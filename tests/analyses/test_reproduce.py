"""The reproduce check: cells agree to the committed precision, a changed table is counted and its
first difference named, a failed command is a row that says so."""

from __future__ import annotations

import pandas as pd
import pytest

from analyses import reproduce
from analyses.reproduce import Check, cell_difference, compare_tables


@pytest.mark.parametrize("committed, rerun, agrees", [
    ("0.812 (0.790–0.834)", "0.812 (0.790–0.834)", True),
    ("0.812 (0.790–0.834)", "0.813 (0.789–0.834)", True),   # one unit in the last digit: a rounding boundary
    ("0.812 (0.790–0.834)", "0.815 (0.790–0.834)", False),
    ("0.812 (0.790–0.834)", "0.812", False),                  # the interval went missing
    ("-0.24 [-0.27, -0.21]", "-0.25 [-0.27, -0.21]", True),
    ("960", "961", False),                                    # counts exactly
    ("mmg_clip", "cxr_clip", False),
    ("n/a", "n/a", True),
    (0.5, "0.5", True),
])
def test_cells_agree_to_the_precision_the_committed_cell_shows(committed, rerun, agrees):
    assert (cell_difference(committed, rerun) is None) == agrees


def test_a_changed_table_counts_its_cells_and_names_the_first():
    committed = pd.DataFrame({"method": ["FActOR", "Grad-CAM"], "IoU": ["0.269 (0.2–0.3)", "0.100 (0.1–0.2)"]})
    assert compare_tables(committed, committed.copy()) == (0, "")
    changed = committed.assign(IoU=["0.300 (0.2–0.3)", "0.100 (0.1–0.2)"])
    count, first = compare_tables(committed, changed)
    assert count == 1 and first.startswith("row 1, IoU: '0.269")
    assert compare_tables(committed, committed.iloc[:1])[0] == -1


def test_each_table_of_a_check_gets_a_verdict(tmp_path, monkeypatch):
    committed = tmp_path / "committed"
    committed.mkdir()
    pd.DataFrame({"a": ["0.500 (0.4–0.6)"]}).to_csv(committed / "same.csv", index=False)
    pd.DataFrame({"a": ["0.500 (0.4–0.6)"]}).to_csv(committed / "moved.csv", index=False)
    check = Check("fake", "some.module", ("--x",), str(committed), ("same.csv", "moved.csv"), has_out=False)
    out = tmp_path / "out"

    def rerun(command):  # what the command would have written
        assert command[:4] == ["python", "-m", "some.module", "--x"] and "--out" not in command
        (out / "fake").mkdir(parents=True)
        pd.DataFrame({"a": ["0.500 (0.4–0.6)"]}).to_csv(out / "fake" / "same.csv", index=False)
        pd.DataFrame({"a": ["0.600 (0.4–0.6)"]}).to_csv(out / "fake" / "moved.csv", index=False)

    monkeypatch.setattr(reproduce, "run_command", rerun)
    rows = reproduce.run_check(check, out)
    assert [(r["verdict"], r["cells differing"]) for r in rows] == [("same", 0), ("differs", 1)]
    monkeypatch.setattr(reproduce, "run_command", lambda command: "status 2 (rerun: ...): bad flag")
    assert {r["verdict"] for r in reproduce.run_check(check, out)} == {"command failed"}


def test_every_check_names_committed_tables_that_exist():
    for check in reproduce.CHECKS:
        for table in check.tables:
            assert (reproduce.Path(__file__).resolve().parents[2] / check.committed / table).is_file(), table


def test_unknown_check_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "nope"])
    assert "--only: unknown ['nope']; valid:" in capsys.readouterr().err


def test_the_readme_results_table_reproduces_from_the_committed_tables(tmp_path):
    """The summary the README quotes is rebuilt from the committed variant, check and speed tables."""
    assert reproduce.main(["--only", "localization_summary", "--out", str(tmp_path), "--no-progress"]) == 0
    verdicts = reproduce.pd.read_csv(tmp_path / "reproduce.csv")
    assert list(verdicts["verdict"]) == ["same"]
