"""``python -m mammo_interp.factor`` end to end on a tiny dataset, its stages, caches and errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import pandas as pd
import pytest
import torch

from mammo_interp import box_timing, factor, factor_study
from mammo_interp import methods as registry
from mammo_interp.features import FeatureSet, breast_mask
from models import clip, default_model
from models.cards import embedded_data, sha256
from models.data import default
from models.data.errors import DataError
from models.data.reading import DataQuirkWarning, ReadOptions
from models.data.synth import SynthConfig
from models.reference import ReferenceConfig, build_model, save_reference


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path


# With these split settings every split of the tiny_masses dataset (this config) has mass boxes.
TINY_MASSES = SynthConfig(n_studies=20, seed=3, image_height=256)
TINY_SPLIT = {"validation_fraction": 0.2, "seed": 1}


def _args(data, checkpoint, out, *extra: str) -> list[str]:
    return ["--data", str(data), "--checkpoint", str(checkpoint), "--image-size", "128", "80",
            "--out", str(out / "runs"), "--report-dir", str(out / "reports"), "--no-progress",
            "--validation-fraction", str(TINY_SPLIT["validation_fraction"]), "--seed", str(TINY_SPLIT["seed"]),
            "--mapper-epochs", "2", "--n-boot", "20", "--ig-steps", "2", "--figure-cases", "2", *extra]


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """An untrained supervised reference for masses at the tiny studies' 128 x 80."""
    config = ReferenceConfig(findings=("Mass",), image_size=(128, 80))
    return save_reference(tmp_path_factory.mktemp("reference") / "best.pt", build_model(config), config)


@pytest.mark.slow
def test_cli_runs_every_method_and_writes_table_figure_and_boxes(tiny_masses, tiny_checkpoint, tiny_reference,
                                                                cache, capsys):
    result = factor.main(["--attribute", "mass", "--reference", str(tiny_reference),
                          *_args(tiny_masses, tiny_checkpoint, cache)])
    printed = capsys.readouterr().out
    table = pd.read_csv(cache / "reports" / "mass_head.csv")
    for label, hit, pointing in zip(table["method"], table["IoU-hit@0.25"], table["pointing game"]):
        assert any(label in line and hit in line and pointing in line for line in printed.splitlines()), label
    assert "best: " in printed and "mass_head.md" in printed
    assert list(table["method"]) == [registry.get(m).label for m in factor.METHODS]
    assert {"IoU-hit@0.25", "IoU-hit@0.5", "AP@0.25", "AP@0.5", "pointing game", "energy PG"} <= set(table.columns)
    for suffix in (".md", ".tex", "_long.csv", "_overlay.png", "_overlay.pdf"):
        assert (cache / "reports" / f"mass_head{suffix}").is_file()
    assert "\\begin{tabular}" in (cache / "reports" / "mass_head.tex").read_text()
    long = pd.read_csv(cache / "reports" / "mass_head_long.csv")
    assert ((long["low"] <= long["value"] + 1e-9) & (long["value"] <= long["high"] + 1e-9)).all()
    boxes = pd.read_csv(cache / "runs" / "mass_head" / "predictions.csv")
    assert len(boxes) and (boxes["xmax"] > boxes["xmin"]).all()
    # Original DICOM pixels are larger than the 128 x 80 model input.
    assert boxes["orig_xmax"].max() > 80 and (boxes["rank"] < 3).all()
    assert result["speed"]["ratio"] > 0 and result["layer"] == "head"


def test_reference_row_is_left_out_without_a_reference_and_a_mismatched_one_is_refused(
        tiny_masses, tiny_checkpoint, tmp_path, cache):
    config = ReferenceConfig(findings=("Suspicious Calcification",), image_size=(128, 80))
    calcification_only = save_reference(tmp_path / "calc.pt", build_model(config), config)
    with pytest.raises(DataError, match="reference predicts"):
        factor.main(["--attribute", "mass", "--reference", str(calcification_only),
                     *_args(tiny_masses, tiny_checkpoint, cache)])
    factor.main(["--attribute", "mass", "--methods", "breast_prior", "supervised_reference",
                 *_args(tiny_masses, tiny_checkpoint, cache)])
    assert list(pd.read_csv(cache / "reports" / "mass_head.csv")["method"]) == ["breast prior"]


@pytest.mark.slow
def test_stages_reuse_cached_features_and_mapper(tiny_masses, tiny_checkpoint, cache, monkeypatch):
    args = ["--attribute", "mass", "--layer", "blocks.4", *_args(tiny_masses, tiny_checkpoint, cache)]
    factor.main([*args, "--stage", "extract"])
    factor.main([*args, "--stage", "train"])
    mapper = cache / "runs" / "mass_blocks4" / "mapper.pt"
    stamp = mapper.stat().st_mtime_ns

    def no_extraction(*_, **__):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr("mammo_interp.features.extract_features", no_extraction)
    factor.main([*args, "--stage", "train"])
    assert mapper.stat().st_mtime_ns == stamp
    result = factor.main([*args, "--stage", "predict"])
    assert result["speed"]["layer"] == "blocks.4"
    # A different mapper config trains a new mapper.
    factor.main([*args, "--stage", "train", "--mapper-hidden", "16"])
    assert mapper.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_every_input_of_the_mapper_is_in_its_cache_key(tiny_masses, tiny_checkpoint, cache, monkeypatch):
    def key(data=tiny_masses, **overrides):
        values = {"data": str(data), "checkpoint": str(tiny_checkpoint), "image_size": (128, 80),
                  "out": str(cache / "runs"), "progress": False, **TINY_SPLIT, **overrides}
        return factor_study.FactorStudy(factor.FactorConfig(**values))._mapper_key()

    base = key()
    assert key() == base
    changed = {"validation fraction": key(validation_fraction=0.25), "seed": key(seed=2),
               "layer": key(layer="blocks.4"), "mapper": key(mapper=factor.MapperConfig(hidden=16))}
    # a box past the image edge: clipped and dropped give other training boxes
    edited = cache / "edited"
    shutil.copytree(tiny_masses, edited)
    first = None
    for name in ("finding_annotations.csv", "synthetic_lesions.csv"):  # the box and its lesion row
        table = pd.read_csv(edited / name)
        first = first or tuple(table.loc[table["xmin"].notna(), ["image_id", "xmin"]].iloc[0])
        table.loc[(table["image_id"] == first[0]) & (table["xmin"] == first[1]), "xmin"] = -5.0
        table.to_csv(edited / name, index=False)
    with pytest.warns(DataQuirkWarning):
        changed["box policy"] = key(edited, reading=ReadOptions(box_policy="drop"))
    with pytest.warns(DataQuirkWarning):
        assert key(edited) not in (base, changed["box policy"])
    # the text side: another sentence bank, or another text encoder, gives another attribute embedding
    real = clip.attribute_sentences
    monkeypatch.setattr(clip, "attribute_sentences", lambda attribute: [*real(attribute), "a round opacity"])
    changed["sentence bank"] = key()
    monkeypatch.setattr(clip, "attribute_sentences", real)
    real_embedding = factor_study.attribute_embedding
    monkeypatch.setattr(factor_study, "attribute_embedding", lambda model, attribute: torch.nn.functional.normalize(
        real_embedding(model, attribute) + 0.01, dim=0))
    changed["text encoder"] = key()
    assert base not in changed.values() and len(set(changed.values())) == len(changed), changed


def test_features_and_mapper_leave_the_encoder_untouched(tiny_masses, tiny_checkpoint, cache):
    config = factor.FactorConfig(data=str(tiny_masses), checkpoint=str(tiny_checkpoint), image_size=(128, 80),
                                 out=str(cache / "runs"), progress=False,
                                 mapper=factor.MapperConfig(epochs=1), **TINY_SPLIT)
    study = factor_study.FactorStudy(config)
    study.encoder.train()  # the mode a caller left it in must survive
    before = {k: v.clone() for k, v in study.encoder.state_dict().items()}
    study.mapper()
    after = study.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BatchNorm running stats
    assert study.encoder.training
    features = study.features("test")
    assert isinstance(features, FeatureSet) and features.maps.shape[1] == study.encoder.out_dim
    assert features.masks.shape[1:] == (128, 80)
    restored = FeatureSet.from_payload(features.to_payload())
    assert torch.equal(restored.maps, features.maps) and restored.image_ids == features.image_ids


def test_box_methods_from_raw_images_match_the_study_heatmaps(tiny_masses, tiny_checkpoint, cache):
    """What box_speed times (methods from raw images) is what the tables score (cached features)."""
    config = factor.FactorConfig(data=str(tiny_masses), checkpoint=str(tiny_checkpoint), image_size=(128, 80),
                                 out=str(cache / "runs"), progress=False,
                                 mapper=factor.MapperConfig(epochs=1), **TINY_SPLIT)
    study = factor_study.FactorStudy(config)
    mapper = study.mapper()
    methods = ("factor", "mean_channels", "random_channels", "gradcam", "layercam", "breast_prior")
    expected = dict(study.method_heatmaps(mapper, "test", methods, rows=range(4)))
    images = torch.stack([study.dataset("test")[i]["image"] for i in range(4)])
    masks = study.features("test").masks[:4]
    for method, heatmaps in study.box_methods(mapper, methods).items():
        torch.testing.assert_close(heatmaps(images, masks).cpu(), expected[registry.get(method).label],
                                   atol=2e-3, rtol=0, msg=method)
    with pytest.raises(ValueError, match="'supervised_reference' is not timed"):
        study.box_methods(mapper, ("supervised_reference",))
    speed = study.time_prediction(mapper, "layercam", max_images=4, repeats=1)
    assert (speed["method"], speed["layer"], speed["images"]) == ("layercam", "head", 4) and speed["ratio"] > 0


def test_time_box_prediction_charges_the_method_and_draws_every_box(monkeypatch):
    drawn, batches = [], []

    def slow_heatmaps(images, masks):
        batches.append(len(images))
        time.sleep(0.05)
        return torch.rand(len(images), *masks.shape[1:])

    monkeypatch.setattr(factor.BoxRule, "boxes", lambda self, heatmap, mask: drawn.append(heatmap.shape))
    encoder = torch.nn.Conv2d(1, 2, 3)
    speed = box_timing.time_box_prediction(encoder, slow_heatmaps, torch.rand(10, 1, 16, 8),
                                       torch.ones(10, 16, 8, dtype=torch.bool), factor.BoxRule(), batch_size=4,
                                       repeats=2)
    assert batches == [4] + [4, 4, 2] * 4  # one warm-up batch, then per repeat: heatmaps alone, with boxes
    assert drawn == [(16, 8)] * 20
    assert speed["boxes_s"] >= 3 * 0.05 and speed["ratio"] == pytest.approx(speed["boxes_s"] / speed["bare_forward_s"])
    assert speed["heatmaps_s"] >= 3 * 0.05
    assert speed["heatmaps_ratio"] == pytest.approx(speed["heatmaps_s"] / speed["bare_forward_s"])
    assert speed["boxes_images_per_s"] == pytest.approx(10 / speed["boxes_s"])


def test_breast_mask_excludes_air():
    image = torch.zeros(20, 20)
    image[:, :8] = 0.6
    mask = breast_mask(image.numpy())
    assert mask[:, :8].all() and not mask[:, 8:].any()


def test_unknown_attribute_lists_the_valid_ones(tmp_path):
    with pytest.raises(SystemExit, match="valid:.*mass"):
        factor.main(["--attribute", "tumour", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports")])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        factor.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "runs"),
                     "--report-dir", str(tmp_path / "reports")])


def test_attribute_without_boxes_in_a_split_names_it(tiny_masses, tiny_checkpoint, cache):
    with pytest.raises(DataError, match="Skin Retraction"):
        factor.main(["--attribute", "skin retraction", *_args(tiny_masses, tiny_checkpoint, cache),
                     "--stage", "extract"])


def test_help_explains_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        factor.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--attribute" in text and "--box-quantile" in text and "--mapper-epochs" in text


def test_unwritable_report_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--report-dir .*a_file/reports is not a writable folder"):
        factor.main(["--report-dir", str(blocker / "reports"), "--out", str(tmp_path / "runs")])


@pytest.mark.slow
def test_same_seed_gives_byte_identical_tables(tiny_masses, tiny_checkpoint, cache):
    cheap = ["--methods", "factor", "random_channels", "mean_channels", "breast_prior"]
    tables = []
    for run in ("one", "two"):
        factor.main(["--attribute", "mass", *_args(tiny_masses, tiny_checkpoint, cache / run), *cheap])
        tables.append((cache / run / "reports" / "mass_head.csv").read_bytes())
    assert tables[0] == tables[1]


def test_best_times_interleaves_runs_and_keeps_each_ones_fastest():
    calls, sleeps = [], {"a": [0.02, 0.0], "b": [0.0, 0.02]}

    def run(name):
        def go():
            calls.append(name)
            time.sleep(sleeps[name][calls.count(name) - 1])
        return go

    seconds = box_timing.best_times({"a": run("a"), "b": run("b")}, repeats=2)
    assert calls == ["a", "b", "a", "b"]
    assert seconds["a"] < 0.015 and seconds["b"] < 0.015


@pytest.mark.slow
def test_a_shipped_mapper_is_used_on_the_embedded_set_which_then_generates_only_evaluation_studies(
        tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_INTERP_DATA", raising=False)
    monkeypatch.setattr(default, "DEFAULT_SYNTH", TINY_MASSES)
    monkeypatch.setattr(factor_study, "MAPPER_DIR", tmp_path / "shipped")
    monkeypatch.setattr(factor_study, "shipped_reference", lambda: tmp_path / "no-reference.pt")
    common = ["--attribute", "mass", "--checkpoint", str(tiny_checkpoint), "--image-size", "128", "80",
              "--no-progress", "--validation-fraction", str(TINY_SPLIT["validation_fraction"]),
              "--seed", str(TINY_SPLIT["seed"]), "--mapper-epochs", "2"]
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache-a"))
    factor.main([*common, "--out", str(tmp_path / "a"), "--report-dir", str(tmp_path / "reports"), "--stage", "train",
                 "--ship-to", str(tmp_path / "shipped")])
    shipped = tmp_path / "shipped" / "factor_mass_head.pt"
    card = json.loads((tmp_path / "shipped" / factor_study.MAPPER_CARD).read_text())["factor_mass_head.pt"]
    assert card["sha256"] == sha256(shipped) and card["checkpoint_sha256"] == sha256(tiny_checkpoint)
    assert card["command"].startswith("python -m mammo_interp.factor") and card["history"]

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped mapper should have been used")

    monkeypatch.setattr(factor_study, "train_mapper", no_training)
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache-b"))  # a fresh machine
    config = factor.FactorConfig(checkpoint=str(tiny_checkpoint), image_size=(128, 80), progress=False,
                                 out=str(tmp_path / "b"), report_dir=str(tmp_path / "reports"),
                                 validation_fraction=TINY_SPLIT["validation_fraction"], seed=TINY_SPLIT["seed"],
                                 mapper=factor.MapperConfig(epochs=2), n_boot=20, figure_cases=2,
                                 methods=("factor", "breast_prior"))
    study = factor_study.FactorStudy(config)
    assert study.packaged is not None and study.splits.train.empty and not study.splits.test.empty
    trained = factor_study.read_mapper(tmp_path / "a" / "mass_head" / "mapper.pt",
                                 torch.load(tmp_path / "a" / "mass_head" / "mapper.pt", weights_only=True)["key"],
                                 config.mapper)
    for name, value in trained.state_dict().items():
        assert torch.equal(value, study.mapper().state_dict()[name]), name
    assert set(study.evaluate()["results"]) == {"FActOR top-k", "breast prior"}
    # another mapper setting has no shipped match: the study trains, so it reads the training split
    other = factor_study.FactorStudy(dataclasses.replace(config, mapper=factor.MapperConfig(epochs=2, hidden=16)))
    assert other.packaged is None and not other.splits.train.empty


def test_ship_to_refuses_user_data(tiny_masses, tmp_path):
    with pytest.raises(SystemExit, match="--ship-to: only mappers of the embedded set"):
        factor.main(["--data", str(tiny_masses), "--ship-to", str(tmp_path), "--out", str(tmp_path / "runs"),
                     "--report-dir", str(tmp_path / "reports")])


def test_shipped_mappers_match_their_card_and_the_shipped_model():
    cards = json.loads((factor_study.MAPPER_DIR / factor_study.MAPPER_CARD).read_text())
    assert {"factor_mass_head.pt", "factor_suspicious_calcification_head.pt"} <= set(cards)
    clip = default_model.shipped_weights()
    for name, card in cards.items():
        path = factor_study.MAPPER_DIR / name
        assert sha256(path) == card["sha256"] and path.stat().st_size == card["bytes"], name
        assert card["checkpoint_sha256"] == sha256(clip) and card["data"] == embedded_data(), name
        assert card["mapper"] == factor.MapperConfig().key(), name  # new mapper settings keep old keys


def test_the_shipped_reference_is_the_default_only_where_it_fits(monkeypatch):
    monkeypatch.delenv("MAMMO_INTERP_DATA", raising=False)
    shipped = factor_study.shipped_reference()
    assert factor_study.shipped_reference_for("Mass", (256, 160), None) == shipped
    assert factor_study.shipped_reference_for("Suspicious Calcification", (256, 160), None) == shipped
    assert factor_study.shipped_reference_for("Architectural Distortion", (256, 160), None) is None
    assert factor_study.shipped_reference_for("Mass", (512, 320), None) is None
    assert factor_study.shipped_reference_for("Mass", (256, 160), "/data/vindr") is None
    monkeypatch.setenv("MAMMO_INTERP_DATA", "/data/vindr")
    assert factor_study.shipped_reference_for("Mass", (256, 160), None) is None


@pytest.mark.slow  # two FActOR runs: 34 s on 2 cores
def test_mixed_precision_runs_and_caches_apart_from_float32(tiny_masses, tiny_checkpoint, cache, one_torch_thread):
    """--precision bf16 (CPU autocast) runs through features and boxes, and its bfloat16 feature maps
    get cache files of their own beside the float32 ones (the trained mapper is reused)."""
    args = _args(tiny_masses, tiny_checkpoint, cache, "--methods", "factor", "breast_prior", "--workers", "1")
    factor.main(args)
    float32 = set((cache / "cache" / "features").glob("features-*.pt"))
    factor.main([*args, "--precision", "bf16"])
    both = set((cache / "cache" / "features").glob("features-*.pt"))
    assert len(float32) == 3 and float32 < both and len(both - float32) >= 2  # validation and test again
    assert list(pd.read_csv(cache / "reports" / "mass_head.csv")["method"]) == ["FActOR top-k", "breast prior"]


def estimate(value):
    return {"value": value, "low": value - 0.05, "high": value + 0.05, "n_boot": 1000}


def test_the_command_ends_on_its_table_and_the_best_method_against_the_prior_and_factor():
    labels = {name: registry.get(name).label for name in ("factor", "layercam", "breast_prior", "supervised_reference")}
    scores = {"factor": 0.011, "layercam": 0.612, "breast_prior": 0.078, "supervised_reference": 0.9}
    result = {"layer": "blocks.4", "speed": {"boxes_images_per_s": 50.0, "ratio": 0.95},
              "files": ["reports/localization/mass_blocks4.csv"],
              "results": {labels[name]: {"IoU-hit@0.25": estimate(score), "pointing game": estimate(score / 2)}
                          for name, score in scores.items()}}
    lines = factor.result_lines(result)
    row = next(line for line in lines if line.strip().startswith(labels["layercam"]))
    assert "blocks.4" in row and "0.612 (0.562–0.662)" in row and "0.306 (0.256–0.356)" in row
    # the supervised reference (a ceiling that uses labels) scores higher but is not the best method
    assert (f"best: {labels['layercam']}, IoU-hit@0.25 0.612 (0.562–0.662), against the breast prior's "
            "0.078 (0.028–0.128) and published FActOR's 0.011 (-0.039–0.061)") in lines
    assert lines[-1].startswith("table: reports/localization/mass_blocks4.md")
