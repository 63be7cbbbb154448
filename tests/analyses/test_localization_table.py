"""The combined localization table runs the grid once and resumes finished studies."""

from __future__ import annotations

import pandas as pd
import pytest

from analyses import localization_table
from mammo_interp.factor_study import FactorStudy
from models import default_model


@pytest.mark.slow
def test_grid_writes_one_table_and_reuses_finished_studies(tiny_masses, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    args = ["--data", str(tiny_masses), "--checkpoints", str(tiny_checkpoint), "--layers", "blocks.4",
            "--attributes", "mass", "--methods", "factor", "mean_channels", "--image-size", "128", "80",
            "--validation-fraction", "0.2", "--seed", "1", "--n-boot", "10", "--no-progress",
            "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports")]
    table = localization_table.main(args)
    assert len(table) == 2 and set(table["layer"]) == {"blocks.4"}
    written = pd.read_csv(tmp_path / "reports" / "combined.csv")
    assert list(written["method"]) == list(table["method"])
    tag = f"{tiny_checkpoint.parent.name}_{tiny_checkpoint.stem}"
    assert (tmp_path / "reports" / tag / "mass_blocks4.md").is_file()

    def no_rerun(self):
        raise AssertionError("a finished study ran again")

    monkeypatch.setattr(FactorStudy, "evaluate", no_rerun)
    again = localization_table.main(args)
    assert again.equals(table)
    with pytest.raises(AssertionError, match="ran again"):
        localization_table.main([*args, "--n-boot", "11"])


class _Built(Exception):
    pass


@pytest.mark.slow
def test_default_names_the_default_model_and_its_folder(tiny_masses, tiny_checkpoint, tmp_path, monkeypatch):
    asked = []

    def resolve(checkpoint, data, progress, *runtime):  # runtime: device, precision, workers
        asked.append(checkpoint)
        return tiny_checkpoint

    def evaluate(self):
        raise _Built(self.out)

    monkeypatch.setattr(default_model, "resolve_checkpoint", resolve)  # what open_checkpoint asks
    monkeypatch.setattr(FactorStudy, "evaluate", evaluate)
    with pytest.raises(_Built) as built:
        localization_table.main(["--data", str(tiny_masses), "--checkpoints", "default", "--layers", "blocks.4",
                                 "--attributes", "mass", "--image-size", "128", "80", "--validation-fraction",
                                 "0.2", "--seed", "1", "--no-progress", "--out", str(tmp_path / "runs"),
                                 "--report-dir", str(tmp_path / "reports")])
    assert asked == [None] and built.value.args[0].parent == tmp_path / "runs" / "default"
