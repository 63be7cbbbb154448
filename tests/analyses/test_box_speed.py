"""The box-speed command on the tiny set: one row per layer and method, the budget column, errors."""

from __future__ import annotations

import pandas as pd
import pytest

from analyses import box_speed


@pytest.mark.slow  # two mappers trained: ~50 s on 2 cores
def test_one_row_per_layer_and_method_with_the_budget(tiny_masses, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    written = box_speed.main(["--data", str(tiny_masses), "--checkpoint", str(tiny_checkpoint), "--image-size", "128",
                              "80", "--layers", "head", "blocks.4", "--methods", "factor", "layercam", "--images", "3",
                              "--batch-size", "2", "--repeats", "1", "--no-progress", "--out", str(tmp_path / "runs"),
                              "--report-dir", str(tmp_path / "reports"), "--device", "cpu",
                              "--validation-fraction", "0.2", "--seed", "1"])
    assert {path.name for path in written} == {"speed_cpu.md", "speed_cpu.csv", "speed_cpu.tex"}
    table = pd.read_csv(tmp_path / "reports" / "speed_cpu.csv")
    assert list(zip(table["layer"], table["method"])) == [("head", "FActOR top-k"), ("head", "LayerCAM"),
                                                          ("blocks.4", "FActOR top-k"), ("blocks.4", "LayerCAM")]
    assert (table["images"] == 3).all()
    ratio = table["boxes / bare forward"].astype(float)
    assert (ratio > 0).all() and list(table["within 1.2x"]) == ["yes" if r <= 1.2 else "no" for r in ratio]


def test_untimed_methods_and_sizes_are_usage_errors(capsys):
    for argv, message in ((["--methods", "supervised_reference"], "not timed"),
                          (["--repeats", "0"], "at least 1"), (["--methods", "nope"], "nope")):
        with pytest.raises(SystemExit) as stop:
            box_speed.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
