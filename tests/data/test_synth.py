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
import models.data.synth.findings as findings_module
from models.data.synth.findings import Breast, sample_lesion, sample_study
from models.data.synth.lesions import overshoot_edge
from models.data.synth.render import render_view
from models.data.vindr import read_vindr

SKIN_LINE_FINDINGS = ("Skin Thickening", "Skin Retraction", "Nipple Retraction")
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
    boxed = finding.dropna(subset=["xmin"])
    # one lesion row per category a finding row names (a calcified mass: two)
    assert len(lesions) == boxed["finding_categories"].map(lambda c: len(ast.literal_eval(c))).sum() > 0
    breast_birads = finding.groupby(["study_id", "laterality"])["breast_birads"].first()
    for (study, side), group in lesions.groupby(["study_id", "laterality"]):
        recorded = [int(b.split()[-1]) for b in group["finding_birads"].dropna()]
        breast = int(breast_birads[(study, side)].split()[-1])
        assert all(b <= breast for b in recorded)
        if len(recorded) == len(group):  # every finding BI-RADS written: the breast takes the worst
            assert breast == max(recorded)
    masses = lesions[lesions["finding_category"] == "Mass"]
    assert masses["mass_shape"].isin(schema.MASS_SHAPES).all()
    assert masses["mass_margin"].isin(schema.MASS_MARGINS).all()


def test_boxes_lie_inside_the_breast(small_dataset):
    """Lesion boxes cover breast tissue (skin and nipple findings sit on the skin line, so their boxes
    also hold air); a box may stick out of the image by at most 41 px, as in VinDr."""
    finding = pd.read_csv(small_dataset / schema.FINDING_CSV).dropna(subset=["xmin"])
    for _, row in finding.iterrows():
        path = small_dataset / schema.IMAGES_DIR / row["study_id"] / f"{row['image_id']}{schema.DICOM_SUFFIX}"
        pixels = read_dicom(path).pixels
        breast = pixels > 0.05
        box = [row[c] for c in schema.BOX_COLUMNS]
        assert -41 <= box[0] < box[2] <= row["width"] + 41 and -41 <= box[1] < box[3] <= row["height"] + 41
        x0, y0 = (max(int(round(v)), 0) for v in box[:2])
        x1, y1 = min(int(round(box[2])), row["width"]), min(int(round(box[3])), row["height"])
        on_skin = set(ast.literal_eval(row["finding_categories"])) & set(SKIN_LINE_FINDINGS)
        assert breast[y0:y1, x0:x1].mean() > (0.2 if on_skin else 0.9), f"box {row['image_id']} lies outside the breast"


def _render_pair(breast, side, view, config, height, width):
    shape = BreastShape.sample(np.random.default_rng([0, ord(side)]), breast.density)
    args = (shape, view, height, width, config.mm_per_pixel, config.difficulty, (0, ord(side)))
    return render_view(breast, *args), render_view(dataclasses.replace(breast, lesions=[]), *args)


def _box_pixels(box, shape) -> tuple[slice, slice]:
    """Row and column slices of the pixels a float ``xyxy`` box covers, cut to an image of ``shape``."""
    height, width = shape
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    return slice(y0, y1), slice(x0, x1)


def _box_z_score(rendered, empty, box, rng) -> float | None:
    """How far the box mean of (with - without the lesion) stands above the same statistic at random
    places of the breast that do not overlap the box (None: the box leaves no room for them)."""
    diff = rendered.stored.astype(float) - empty.stored.astype(float)
    breast = empty.stored > 0.05 * empty.stored.max()
    height, width = diff.shape
    rows, cols = _box_pixels(box, diff.shape)
    x0, y0, x1, y1 = cols.start, rows.start, cols.stop, rows.stop
    h, w = y1 - y0, x1 - x0
    ys, xs = np.nonzero(breast[: height - h, : width - w])
    apart = (xs + w <= x0) | (xs >= x1) | (ys + h <= y0) | (ys >= y1)
    ys, xs = ys[apart], xs[apart]
    if len(xs) < 50:
        return None
    picks = rng.integers(0, len(xs), 200)
    null = np.array([diff[ys[i]:ys[i] + h, xs[i]:xs[i] + w].mean() for i in picks])
    return float((diff[rows, cols].mean() - null.mean()) / (null.std() + 1e-9))


def _lesions_alone(config: SynthConfig, n_studies: int, categories=None):
    """Each lesion of ``n_studies`` sampled studies rendered alone in each of its views, beside the
    same breast without it: ``(rendered, empty, box)`` at 256 x 204 px."""
    for index in range(n_studies):
        study = sample_study(np.random.default_rng([11, index]), index, config)
        for side in ("R", "L"):
            for lesion in study.breasts[side].lesions:
                if categories is not None and lesion.category not in categories:
                    continue
                alone = dataclasses.replace(study.breasts[side], lesions=[lesion])
                for view in lesion.views:
                    rendered, empty = _render_pair(alone, side, view, config, 256, 204)
                    for _, box in rendered.boxes:
                        yield rendered, empty, box


def _relative_contrast(rendered, empty, box) -> float:
    """The lesion's mean added brightness in its box over the breast's texture spread."""
    texture = empty.stored[empty.stored > 0.05 * empty.stored.max()].std()
    pixels = _box_pixels(box, empty.stored.shape)
    return float((rendered.stored[pixels].astype(float) - empty.stored[pixels].astype(float)).mean() / texture)


def test_lesions_are_visible_against_the_same_breast_without_them():
    """Visible but not trivial at the default difficulty. Visible: each lesion, rendered alone, passes
    :func:`_box_z_score` > 1 (the noise stream desynchronizes after the first changed pixel, so the
    null is not zero). Not trivial: its contrast stays below the breast's own texture spread, so
    brightness alone does not find it."""
    rng = np.random.default_rng(0)
    scores, relative = [], []
    for rendered, empty, box in _lesions_alone(SynthConfig(image_height=256), 40):
        score = _box_z_score(rendered, empty, box, rng)
        if score is not None:
            scores.append(score)
            relative.append(_relative_contrast(rendered, empty, box))
    scores, relative = np.array(scores), np.array(relative)
    assert len(scores) >= 40
    assert (scores > 1.0).all(), f"lesions lost in the noise: z = {np.sort(scores)[:5]}"
    assert np.median(scores) > 3.0
    assert np.median(relative) < 0.5, "lesions are brighter than the anatomy: a trivial task"


def test_easy_end_of_the_scale_makes_masses_stand_out():
    """Below 1.1.0's easiest setting (0.5) masses stand further out of the texture than at the
    default 0.75, at the same places."""
    contrast = {d: np.median([_relative_contrast(*seen) for seen in _lesions_alone(
        SynthConfig(image_height=256, difficulty=d), 30, {"Mass"})]) for d in (0.0, 0.5, 0.75)}
    assert contrast[0.0] > 2 * contrast[0.5] and contrast[0.5] > contrast[0.75], contrast


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


RARE = ("Skin Thickening", "Suspicious Lymph Node", "Nipple Retraction", "Global Asymmetry", "Skin Retraction")


@pytest.mark.parametrize("category", RARE)
def test_each_rare_category_changes_the_image_inside_its_box(category):
    config = SynthConfig(image_height=256)
    lesion = sample_lesion(np.random.default_rng(4), 0, category, config)
    lesion.views = ("CC", "MLO")
    breast = Breast("L", "B", [lesion])
    rng = np.random.default_rng(0)
    for view in ("CC", "MLO"):
        rendered, empty = _render_pair(breast, "L", view, config, 256, 204)
        (_, box), = rendered.boxes
        assert _box_z_score(rendered, empty, box, rng) > 1.0, (category, view)


def test_overshoot_only_moves_boxes_near_an_edge_past_it():
    rng = np.random.default_rng(0)
    near = [overshoot_edge((3.0, 100.0, 40.0, 140.0), 400, 512, rng) for _ in range(50)]
    assert all(1.4 <= -b[0] <= 41.0 and b[1:] == (100.0, 40.0, 140.0) for b in near)
    assert overshoot_edge((150.0, 200.0, 190.0, 240.0), 400, 512, rng) == (150.0, 200.0, 190.0, 240.0)
    low = overshoot_edge((150.0, 480.0, 190.0, 510.0), 400, 512, rng)
    assert low[:3] == (150.0, 480.0, 190.0) and 513.4 <= low[3] <= 553.0


def test_calcified_masses_and_missing_birads_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(findings_module, "CALCIFIED_MASS_PROB", 1.0)
    monkeypatch.setattr(findings_module, "MISSING_BIRADS_PROB", 1.0)
    config = SynthConfig(n_studies=8, seed=2, image_height=128, finding_prevalence=1.0,
                         finding_probs={"Mass": 1.0}, second_finding_prob=0.0)
    root = generate_dataset(tmp_path / "quirks", config, workers=1, progress=False)
    rows = pd.read_csv(root / schema.FINDING_CSV).dropna(subset=["xmin"])
    assert rows["finding_birads"].isna().all()
    assert (rows["finding_categories"] == str(["Mass", "Suspicious Calcification"])).any()
    table = read_vindr(root)
    for boxes in table["boxes"]:
        masses = [b for b in boxes if b.category == "Mass"]
        calcs = [b for b in boxes if b.category == "Suspicious Calcification"]
        for mass in masses:  # a BI-RADS 4-5 mass names both categories with one box, both joined
            twin = [c for c in calcs if c[:4] == mass[:4]]
            assert all(c.malignant == mass.malignant and c.birads is None for c in twin)
            assert mass.mass_shape in schema.MASS_SHAPES and mass.birads is None


def test_prevalence_preset_sets_the_rates_and_flags_still_win(tmp_path):
    assert SynthConfig().with_prevalence("vindr").finding_prevalence == 0.185
    assert SynthConfig().with_prevalence("vindr").with_prevalence("enriched") == SynthConfig()
    with pytest.raises(ValueError, match="prevalence: unknown 'rare'; valid: vindr, enriched"):
        SynthConfig().with_prevalence("rare")
    for extra, expected in (([], 0.185), (["--finding-prevalence", "0.3"], 0.3)):
        out = tmp_path / f"p{len(extra)}"
        synth_main(["--out", str(out), "--n-studies", "1", "--image-height", "96", "--workers", "1",
                    "--no-progress", "--prevalence", "vindr", *extra])
        saved = json.loads((out / schema.METADATA_JSON).read_text())["config"]
        assert saved["finding_prevalence"] == expected and saved["density_probs"][2] == 0.765
