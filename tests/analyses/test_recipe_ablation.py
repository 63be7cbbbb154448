"""The recipe ablation: variants are built from the recipe file through pretraining's own CLI checks,
each is trained (resumably) into its own folder, and the table reports the epoch pretraining keeps."""

import json
import shutil

import pandas as pd
import pytest

from analyses import recipe_ablation
from analyses.recipe_ablation import (RecipeAblationConfig, main, merged, read_recipes, variant_config,
                                      write_report)


def _recipes(tmp_path, variants, base=None):
    path = tmp_path / "recipes.json"
    path.write_text(json.dumps({"base": base or {"epochs": 1, "image_size": [64, 40], "batch_size": 8,
                                                 "validation_fraction": 0.2, "model": {"embed_dim": 16}},
                                "variants": variants}))
    return path


def test_packaged_recipes_build_valid_configs():
    recipes = read_recipes(None)
    config = RecipeAblationConfig(data="somewhere", out="runs/x")
    built = {v["name"]: variant_config(config, recipes, v) for v in recipes["variants"]}
    assert built["baseline"].positive_fraction == 0 and built["balanced sampling"].positive_fraction == 0.5
    assert built["LSE pooling"].model.image.pooling == "lse" and built["baseline"].model.image.pooling == "avg"
    assert built["LSE pooling"].model.image.name == built["baseline"].model.image.name  # nested merge keeps the rest
    assert {c.data for c in built.values()} == {"somewhere"} and all(c.resume for c in built.values())
    assert len({c.out for c in built.values()}) == len(built)


def test_merge_is_nested_and_leaves_inputs_alone():
    base = {"a": 1, "model": {"image": {"pooling": "avg", "name": "x"}}}
    assert merged(base, {"model": {"image": {"pooling": "lse"}}}) == {"a": 1, "model": {"image": {"pooling": "lse", "name": "x"}}}
    assert base["model"]["image"]["pooling"] == "avg"


def test_bad_recipe_files_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit):  # an unknown PretrainConfig key: a usage error naming the variant
        variant_config(RecipeAblationConfig(), {"base": {}}, {"name": "typo", "changes": {"epoch": 3}})
    with pytest.raises(ValueError, match="distinct names"):
        read_recipes(str(_recipes(tmp_path, [{"name": "a"}, {"name": "a"}])))
    with pytest.raises(ValueError, match="--only"):
        main(["--recipes", str(_recipes(tmp_path, [{"name": "a"}])), "--only", "b", "--out", str(tmp_path / "runs"),
              "--report-dir", str(tmp_path / "reports")])


@pytest.mark.slow
def test_runs_each_variant_and_reports_the_kept_epoch(tiny_masses, tmp_path, monkeypatch, one_torch_thread):
    path = _recipes(tmp_path, [{"name": "baseline", "changes": {}},
                               {"name": "two epochs", "changes": {"epochs": 2}}])
    args = ["--recipes", str(path), "--data", str(tiny_masses), "--out", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "reports"), "--no-progress"]
    frame = main(args)
    assert list(frame["variant"]) == ["baseline", "two epochs"] and list(frame["epochs"]) == [1, 2]
    history = pd.read_csv(tmp_path / "runs" / "two-epochs" / "metrics.csv")
    kept = history.loc[history["val_loss"].idxmin()]
    row = frame.set_index("variant").loc["two epochs"]
    assert row["kept epoch"] == kept["epoch"] + 1
    assert row["val R@1"] == pytest.approx(kept["val_r1"])
    assert row["val mass AUROC"] == pytest.approx(kept["val_zeroshot_mass"], nan_ok=True)
    assert set(pd.read_csv(tmp_path / "reports" / "clip_ablation.csv")["variant"]) == {"baseline", "two epochs"}
    calls = []  # a rerun asks pretraining to resume each variant and rebuilds the same table
    monkeypatch.setattr(recipe_ablation, "pretrain", lambda c: calls.append(c.out))
    again = main(args)
    assert len(calls) == 2 and again.equals(frame)
    shutil.rmtree(tmp_path / "runs")  # a later session: run folders gone, the kept metrics remain
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reports" / "runs" / "two-epochs.csv"), history)
    config = RecipeAblationConfig(data=str(tiny_masses), out=str(tmp_path / "runs"),
                                  report_dir=str(tmp_path / "reports"))
    assert write_report(config, read_recipes(str(path))).equals(frame)


def test_ceiling_row_comes_from_the_shipped_reference_card_on_the_embedded_set(tmp_path):
    recipes = {"variants": []}
    rows = recipe_ablation.ablation_rows(RecipeAblationConfig(out=str(tmp_path)), recipes)
    card = json.loads((recipe_ablation.shipped_reference().with_suffix(".json")).read_text())
    assert rows == [{"variant": "supervised reference (ceiling)", "changes": "box-free finding labels",
                     "epochs": card["epochs_trained"], "kept epoch": card["kept_epoch"],
                     "val mass AUROC": card["validation"]["val_auroc_Mass"],
                     "val calcification AUROC": card["validation"]["val_auroc_Suspicious Calcification"]}]
    assert recipe_ablation.ablation_rows(RecipeAblationConfig(data=str(tmp_path), out=str(tmp_path)), recipes) == []
