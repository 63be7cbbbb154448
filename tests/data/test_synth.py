"""The synthetic generator: VinDr schema, determinism, geometry and lesion visibility."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from models.data import schema
from models.data.dicom import read_dicom
from models.data.synth import SynthConfig, generate_dataset
from models.data.synth.__main__ import main as synth_main
from models.data.synth.anatomy import BreastShape
from models.data.synth.findings import sample_study
from models.data.synth.render import render_view

SMALL = SynthConfig(n_studies=6, seed=3, image_height=192, finding_prevalence=0.9,
                    jpeg2000_fraction=0.5, monochrome1_fraction=0.5)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synth") / "data", SMALL, workers=1, progress=False)


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != schema.METADATA_JSON}


def test_same_seed_same_bytes_whatever_the_workers(small_dataset, tmp_path):
    again = generate_dataset(tmp_path / "again", SMALL, workers=2, progress=False)
    assert _digest(small_dataset) == _digest(again)
    other = generate_dataset(tmp_path / "other", dataclasses.replace(SMALL, seed=4), workers=1, progress=False)
    assert _digest(other) != _digest(small_dataset)


def test_layout_and_schema_match_vindr(small_dataset):
    breast = pd.read_csv(small_dataset / schema.BREAST_LEVEL_CSV)
    finding = pd.read_csv(small_dataset / schema.FINDING_CSV)
    assert tuple(breast.columns) == schema.BREAST_LEVEL_COLUMNS
    assert tuple(finding.columns) == schema.FINDING_COLUMNS
    assert len(breast) == 4 * SMALL.n_studies and breast["image_id"].is_unique
    assert (breast.groupby("study_id").size() == 4).all()
    assert set(breast["laterality"]) == set(schema.LATERALITIES) and set(breast["view_position"]) == set(schema.VIEWS)
    assert set(breast["breast_birads"]) <= set(schema.BIRADS)
    assert set(breast["breast_density"]) <= set(schema.DENSITIES)
    assert set(breast["split"]) <= set(schema.SPLITS)
    assert breast["study_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert breast["image_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    for _, row in finding.iterrows():
        categories = ast.literal_eval(row["finding_categories"])
        assert isinstance(categories, list) and categories
        no_finding = categories == [schema.NO_FINDING]
        assert np.isnan(row["xmin"]) == no_finding and pd.isna(row["finding_birads"]) == no_finding
        if not no_finding:
            assert set(categories) <= set(schema.FINDING_CATEGORIES)
            assert row["finding_birads"] in schema.BIRADS[2:]
    for _, row in breast.iterrows():
        path = small_dataset / schema.IMAGES_DIR / row["study_id"] / f"{row['image_id']}{schema.DICOM_SUFFIX}"
        assert path.is_file()
    meta = json.loads((small_dataset / schema.METADATA_JSON).read_text())
    assert meta["seed"] == SMALL.seed and meta["generator_version"]


def test_dicoms_mix_encodings_and_match_csv(small_dataset):
    breast = pd.read_csv(small_dataset / schema.BREAST_LEVEL_CSV)
    seen = set()
    for _, row in breast.iterrows():
        path = small_dataset / schema.IMAGES_DIR / row["study_id"] / f"{row['image_id']}{schema.DICOM_SUFFIX}"
        image = read_dicom(path)
        assert image.pixels.shape == (row["height"], row["width"])
        assert (image.laterality, image.view_position) == (row["laterality"], row["view_position"])
        seen.add((image.photometric, image.transfer_syntax))
        # VinDr orientation: the chest wall (tissue) is on the left edge for L, the right edge for R.
        columns = image.pixels.mean(axis=0)
        left, right = columns[: len(columns) // 4].mean(), columns[-len(columns) // 4:].mean()
        assert (left > right) == (row["laterality"] == "L")
    assert {p for p, _ in seen} == {"MONOCHROME1", "MONOCHROME2"}
    assert "1.2.840.10008.1.2.4.90" in {t for _, t in seen}


def test_breast_birads_is_max_finding_birads(small_dataset):
    finding = pd.read_csv(small_dataset / schema.FINDING_CSV)
    lesions = pd.read_csv(small_dataset / schema.SYNTH_LESIONS_CSV)
    assert len(lesions) == finding["xmin"].notna().sum() > 0
    breast_birads = finding.groupby(["study_id", "laterality"])["breast_birads"].first()
    for (study, side), group in lesions.groupby(["study_id", "laterality"]):
        worst = max(int(b.split()[-1]) for b in group["finding_birads"])
        assert int(breast_birads[(study, side)].split()[-1]) == worst
    masses = lesions[lesions["finding_category"] == "Mass"]
    assert masses["mass_shape"].isin(schema.MASS_SHAPES).all()
    assert masses["mass_margin"].isin(schema.MASS_MARGINS).all()


def test_boxes_lie_inside_the_breast(small_dataset):
    finding = pd.read_csv(small_dataset / schema.FINDING_CSV).dropna(subset=["xmin"])
    for _, row in finding.iterrows():
        path = small_dataset / schema.IMAGES_DIR / row["study_id"] / f"{row['image_id']}{schema.DICOM_SUFFIX}"
        pixels = read_dicom(path).pixels
        breast = pixels > 0.05
        x0, y0, x1, y1 = (int(round(row[c])) for c in schema.BOX_COLUMNS)
        assert 0 <= x0 < x1 <= row["width"] and 0 <= y0 < y1 <= row["height"]
        assert breast[y0:y1, x0:x1].mean() > 0.9, f"box {row['image_id']} lies outside the breast"


def _render_pair(study, side, view, config, height, width):
    shape = BreastShape.sample(np.random.default_rng([0, ord(side)]), study.density)
    args = (shape, view, height, width, config.mm_per_pixel, config.difficulty, (0, ord(side)))
    with_lesions = render_view(study.breasts[side], *args)
    empty = dataclasses.replace(study.breasts[side], lesions=[])
    return with_lesions, render_view(empty, *args)


def test_lesions_are_visible_against_the_same_breast_without_them():
    """Visible but not trivial. Visible: the box mean of (with - without lesion) stands out from the
    same statistic at random places of the breast (z-score against the noise). Not trivial: that
    contrast stays below the breast's own texture spread, so brightness alone does not find it."""
    config = SynthConfig(image_height=256)
    rng = np.random.default_rng(0)
    scores, relative = [], []
    for index in range(40):
        study = sample_study(np.random.default_rng([11, index]), index, config)
        for side in ("R", "L"):
            if not study.breasts[side].lesions:
                continue
            for view in ("CC", "MLO"):
                rendered, empty = _render_pair(study, side, view, config, 256, 204)
                diff = rendered.stored.astype(float) - empty.stored.astype(float)
                breast = empty.stored > 0.05 * empty.stored.max()
                texture = empty.stored[breast].std()
                for _, (x0, y0, x1, y1) in rendered.boxes:
                    x0, y0, x1, y1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
                    inside = diff[y0:y1, x0:x1].mean()
                    h, w = y1 - y0, x1 - x0
                    ys, xs = np.nonzero(breast[: breast.shape[0] - h, : breast.shape[1] - w])
                    picks = rng.integers(0, len(xs), 200)
                    null = np.array([diff[ys[i]:ys[i] + h, xs[i]:xs[i] + w].mean() for i in picks])
                    scores.append((inside - null.mean()) / (null.std() + 1e-9))
                    relative.append(inside / texture)
    scores, relative = np.array(scores), np.array(relative)
    assert len(scores) >= 20
    assert (scores > 1.0).all(), f"lesions lost in the noise: z = {np.sort(scores)[:5]}"
    assert np.median(scores) > 3.0
    assert np.median(relative) < 0.5, "lesions are brighter than the anatomy: a trivial task"


def test_both_views_agree_on_nipple_distance(small_dataset):
    lesions = pd.read_csv(small_dataset / schema.SYNTH_LESIONS_CSV)
    breast = pd.read_csv(small_dataset / schema.BREAST_LEVEL_CSV).set_index("image_id")
    mm = SMALL.mm_per_pixel
    gaps = []
    for _, pair in lesions.groupby(["study_id", "lesion_id"]):
        if set(pair["view_position"]) != {"CC", "MLO"}:
            continue
        distances = {}
        for _, row in pair.iterrows():
            pixels = read_dicom(breast.loc[row["image_id"], "study_id"] and
                                small_dataset / schema.IMAGES_DIR / row["study_id"]
                                / f"{row['image_id']}{schema.DICOM_SUFFIX}").pixels
            reach = np.nonzero((pixels > 0.05).any(axis=0))[0]
            nipple_x = reach.max() if row["laterality"] == "L" else reach.min()
            centre = (row["xmin"] + row["xmax"]) / 2
            distances[row["view_position"]] = abs(nipple_x - centre) * mm
        gaps.append(distances["MLO"] - distances["CC"])
    assert gaps, "no lesion seen in both views"
    assert np.median(np.abs(gaps)) < 15.0


def test_cli_writes_dataset_and_rejects_bad_flags(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth_main(["--out", str(out), "--n-studies", "1", "--image-height", "96", "--workers", "1"]) == 0
    assert (out / schema.BREAST_LEVEL_CSV).is_file()
    assert "synthesizing studies" in capsys.readouterr().err
    assert synth_main(["--out", str(out), "--n-studies", "1", "--image-height", "96", "--workers", "1",
                       "--overwrite", "--no-progress"]) == 0
    assert "synthesizing studies" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synth_main(["--out", str(out), "--n-studies", "1"])  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "x"), "--difficulty", "2"])
    assert "difficulty" in capsys.readouterr().err
    assert not list(tmp_path.glob(".x.partial-*")), "a failed run left a staging directory"
