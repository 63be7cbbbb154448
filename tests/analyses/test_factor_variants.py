"""FActOR variants chosen on validation: the grid, the choice, and the published row equal to
mammo_interp.factor's own FActOR row."""

from __future__ import annotations

import pandas as pd
import pytest

from analyses import factor_variants as fv
from mammo_interp import factor
from mammo_interp import methods as registry


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _common(data, checkpoint) -> list[str]:
    return ["--data", str(data), "--checkpoint", str(checkpoint), "--image-size", "128", "80", "--no-progress",
            "--validation-fraction", "0.2", "--seed", "1", "--n-boot", "20"]


@pytest.mark.slow
def test_variants_are_chosen_on_validation_and_the_published_row_is_factors(tiny_masses, tiny_checkpoint, cache,
                                                                          one_torch_thread):
    fv.main([*_common(tiny_masses, tiny_checkpoint), "--layers", "head", "--out", str(cache / "runs"),
             "--report-dir", str(cache / "reports"), "--cam-channels", "2"])
    table = pd.read_csv(cache / "reports" / "mass_head.csv")
    methods = [f"FActOR, {s} scaling" for s in ("global", "channel")] + [registry.get(m).label for m in fv.BASELINES]
    assert list(table["method"]) == [fv.PUBLISHED, *methods]
    grid = pd.read_csv(cache / "reports" / "mass_head_validation.csv")
    settings = len(fv.TOP_K) + len(fv.TEMPERATURES)
    assert len(grid) == len(fv.QUANTILES) * (2 * settings + len(fv.BASELINES))
    chosen = table.set_index("method")["setting"]
    for method, rows in grid.groupby("method", sort=False):
        best = rows.loc[rows[fv.SELECTION_METRIC].idxmax()]  # first maximum, as the analysis picks
        setting = f"{best['setting'] + ', ' if isinstance(best['setting'], str) else ''}quantile {best['quantile']}"
        assert chosen[method].startswith(setting), method
    # The published row is mammo_interp.factor's FActOR row: same mapper, top-3, quantile 0.95.
    factor.main([*_common(tiny_masses, tiny_checkpoint), "--methods", "factor", "--out", str(cache / "factor"),
                 "--report-dir", str(cache / "factor_reports"), "--figure-cases", "1"])
    ours = pd.read_csv(cache / "reports" / "mass_head.csv").set_index("method").loc[fv.PUBLISHED]
    theirs = pd.read_csv(cache / "factor_reports" / "mass_head.csv").set_index("method").loc["FActOR top-k"]
    assert ours.drop("setting").equals(theirs)


def test_layers_and_devices_are_checked_while_parsing(capsys):
    with pytest.raises(SystemExit) as stop:
        fv.main(["--layers"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit):
        fv.main(["--workers", "-2"])
    assert "--workers must be 0" in capsys.readouterr().err
