"""Zero-shot scoring (logit scale, ensembles, negations), calibration, targets per level, and the
CLI / prompt ablation end to end on a tiny synthetic dataset with an untrained checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.prompt_ablation import PromptAblationConfig
from analyses.prompt_ablation import main as ablation_main
from mammo_interp.calibration import expected_calibration_error, reliability_bins
from mammo_interp.embeddings import EmbeddingConfig
from mammo_interp.prompts import load_prompt_sets
from mammo_interp.report import ReportConfig
import mammo_interp.zeroshot as zeroshot_module
from mammo_interp.zero_shot_classifier import (
    ZeroShotClassifier, contrast_probabilities, ensemble_embeddings, zero_shot_probabilities,
)
from mammo_interp.zeroshot import (
    SplitConfig, ZeroShotConfig, embed_level, embed_split, evaluate, level_items, level_targets, main,
)
from models.checkpoints import save_checkpoint
from models.clip import ClipConfig, ClipModel
from models.data.labels import IGNORE_INDEX
from models.data.synth import SynthConfig, generate_dataset
from models.data.tables import Box

E = torch.eye(2, dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model():
    return ClipModel(ClipConfig(embed_dim=32)).eval()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshot") / "synthetic"
    generate_dataset(root, SynthConfig(n_studies=16, seed=11, image_height=256), workers=1, progress=False)
    return str(root)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "clip.pt", tiny_model,
                               pretrain_config={"image_size": [128, 80]}))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One preprocessed-image cache for the end-to-end tests (each decodes the same DICOMs)."""
    return str(tmp_path_factory.mktemp("cache"))


def test_softmax_uses_the_logit_scale():
    image = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    text = [E[:1], E[1:]]  # cosines 1 and 0
    scaled = zero_shot_probabilities(image, text, logit_scale=10.0)
    assert scaled[0, 0].item() == pytest.approx(math.exp(10) / (math.exp(10) + 1))
    unscaled = zero_shot_probabilities(image, text, logit_scale=1.0)
    assert unscaled[0, 0].item() == pytest.approx(math.e / (math.e + 1))  # 0.731: bunched near 0.5
    # unnormalized inputs are normalized first; rows sum to one
    assert torch.allclose(zero_shot_probabilities(3 * image, text, 10.0), scaled)
    assert torch.allclose(scaled.sum(dim=1), torch.ones(1, dtype=torch.float64))


def test_embedding_and_score_ensembles_differ_on_a_constructed_case():
    image = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # two prompts for class A
    b = torch.tensor([[0.6, 0.8]], dtype=torch.float64)  # one prompt for class B, cosine 0.6
    assert torch.allclose(ensemble_embeddings([a, b])[0], torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2))
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731 - 2-class softmax
    embedding = zero_shot_probabilities(image, [a, b], 10.0, "embedding")[0, 0].item()
    assert embedding == pytest.approx(sigmoid(10 * (1 / math.sqrt(2) - 0.6)))  # 0.745
    score = zero_shot_probabilities(image, [a, b], 10.0, "score")[0, 0].item()
    # variant 0: A=[1,0] vs B; variant 1: A=[0,1] vs B (B's single prompt reused)
    assert score == pytest.approx((sigmoid(10 * (1 - 0.6)) + sigmoid(10 * (0 - 0.6))) / 2)  # 0.492
    assert abs(embedding - score) > 0.2
    # a single prompt per class: both ensembles agree
    single = [a[:1], b]
    assert torch.allclose(zero_shot_probabilities(image, single, 5.0, "embedding"),
                          zero_shot_probabilities(image, single, 5.0, "score"))
    with pytest.raises(ValueError, match="ensemble"):
        zero_shot_probabilities(image, single, 5.0, "vote")


def test_each_class_against_its_negation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    positive = [E[:1], E[1:]]
    negative = [E[1:], E[:1]]
    probs = contrast_probabilities(image, positive, negative, logit_scale=2.0)
    high, low = math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)
    assert torch.allclose(probs, torch.tensor([[high, low], [low, high]], dtype=torch.float64))


def test_ece_matches_a_hand_computation():
    # binary, 2 bins: [0, .5) holds .1, .2 (positive rate .5), [.5, 1] holds .8, .9 (rate 1)
    y, p = np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert expected_calibration_error(y, np.stack([1 - p, p], axis=1), n_bins=2) == pytest.approx(0.25)
    # ignored rows are dropped
    assert expected_calibration_error(np.append(y, IGNORE_INDEX), np.append(p, 0.99), n_bins=2) == pytest.approx(0.25)
    # multi-class: top-class confidence .7 (correct), .5 (wrong), .6 (wrong) in bins 7, 5, 6 of 10
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.2, 0.2, 0.6]])
    labels = np.array([0, 0, 1])
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx((0.3 + 0.5 + 0.6) / 3)
    bins = reliability_bins(labels, probs, n_bins=2)  # all three in [.5, 1]
    assert bins.counts.tolist() == [0, 3] and bins.observed[1] == pytest.approx(1 / 3)
    assert math.isnan(bins.confidence[0]) and not bins.binary
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0]), n_bins=15) == 0.0
    metrics = evaluate(np.array([0, 1, 1, 1, IGNORE_INDEX]), np.stack([1 - np.append(p, .5), np.append(p, .5)], 1),
                       n_boot=30, n_bins=2)
    assert metrics["ece"].value == pytest.approx(0.25) and metrics["auroc"].value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no item"):
        evaluate(np.full(3, IGNORE_INDEX), np.full((3, 2), 0.5), n_boot=10)


def _box(category, shape=None, margin=None):
    return Box(0.0, 0.0, 5.0, 5.0, category, mass_shape=shape, mass_margin=margin)


def test_targets_per_level():
    rows = [  # (study, side, view, findings, boxes, malignancy, density)
        ("s1", "L", "CC", ["Mass"], [_box("Mass", "round", "obscured")], 1.0, "B"),
        ("s1", "L", "MLO", ["Mass"], [_box("Mass", "round", "spiculated")], 1.0, "B"),
        ("s1", "R", "CC", [], [], 0.0, "C"),
        ("s1", "R", "MLO", [], [], 0.0, "C"),
        ("s2", "L", "CC", ["Mass", "Suspicious Calcification"],
         [_box("Mass", "oval"), _box("Suspicious Calcification")], float("nan"), "A"),
        ("s2", "L", "MLO", None, [], float("nan"), "A"),
    ]
    table = pd.DataFrame(rows, columns=["study_id", "laterality", "view", "finding_categories", "boxes",
                                        "malignancy", "density"])
    table["image_id"] = [f"i{k}" for k in range(len(table))]
    table["path"] = "unused"
    images = [r for r, _, _ in level_items(table, "image")]
    assert level_targets(table, "mass", images).tolist() == [1, 1, 0, 0, 1, IGNORE_INDEX]
    assert level_targets(table, "mass_shape", images).tolist() == [0, 0, *[IGNORE_INDEX] * 2, 1, IGNORE_INDEX]
    assert level_targets(table, "calcification", images).tolist() == [0, 0, 0, 0, 1, IGNORE_INDEX]
    breasts = level_items(table, "breast")
    assert [(s, v) for _, s, v in breasts] == [("L", None), ("R", None), ("L", None)]
    rows_of = [r for r, _, _ in breasts]
    assert rows_of == [(0, 1), (2, 3), (4, 5)]
    assert level_targets(table, "mass", rows_of).tolist() == [1, 0, 1]
    assert level_targets(table, "mass_shape", rows_of).tolist() == [0, IGNORE_INDEX, 1]
    # margins disagree between the views of the left breast: unknown, not a guess
    assert level_targets(table, "mass_margin", rows_of).tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    exams = [r for r, s, v in level_items(table, "exam")]
    assert exams == [(2, 0, 3, 1), (4, 5)]  # R-CC, L-CC, R-MLO, L-MLO slots
    assert level_targets(table, "malignancy", exams).tolist() == [1, IGNORE_INDEX]
    assert level_targets(table, "density", exams).tolist() == [IGNORE_INDEX, 0]  # B vs C disagree


def test_breast_embedding_averages_view_features(tiny_model):
    table = pd.DataFrame({"study_id": ["s", "s", "s"], "laterality": ["L", "L", "R"], "view": ["CC", "MLO", "CC"],
                          "image_id": ["a", "b", "c"], "path": "unused", "boxes": [[], [], []]})
    features = torch.randn(3, tiny_model.image_encoder.out_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = embed_level(tiny_model, table, "image", features)
        breast = embed_level(tiny_model, table, "breast", features)
        expected = tiny_model.project_image_features(torch.stack([features[:2].mean(0), features[2]]))
    assert torch.allclose(image.embeddings, tiny_model.project_image_features(features))
    assert torch.allclose(breast.embeddings, expected)
    assert breast.rows == ((0, 1), (2,)) and breast.sides == ("L", "R") and breast.views == (None, None)
    assert torch.allclose(breast.embeddings.norm(dim=1), torch.ones(2))


def test_classifier_fills_side_and_view_per_image(tiny_model):
    prompts = load_prompt_sets()["side_view"].tasks["mass"]
    image = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=1)
    classifier = ZeroShotClassifier(tiny_model, prompts, "embedding")
    probs = classifier.predict(image, ["L", "R", "L"], ["CC", "MLO", None])
    scale = tiny_model.logit_scale().item()
    with torch.no_grad():
        for row, (side, view) in enumerate([("L", "craniocaudal"), ("R", "mediolateral oblique")]):
            texts = [f"No mass in the {'left' if side == 'L' else 'right'} breast, {view} view.",
                     f"A mass in the {'left' if side == 'L' else 'right'} breast, {view} view."]
            logits = scale * image[row] @ tiny_model.encode_text(texts).T
            assert np.allclose(probs[row], logits.softmax(-1).numpy(), atol=1e-6)
        both = [[f"{start} in the left breast, {v} view." for v in ("craniocaudal", "mediolateral oblique")]
                for start in ("No mass", "A mass")]
        text = [tiny_model.encode_text(t) for t in both]
        assert np.allclose(probs[2], zero_shot_probabilities(image[2:], text, scale)[0].numpy(), atol=1e-6)
    assert set(classifier._text) == {("L", "CC"), ("R", "MLO"), ("L", None)}
    unscaled = ZeroShotClassifier(tiny_model, prompts, use_logit_scale=False)
    assert unscaled.logit_scale == 1.0
    spread = lambda p: np.abs(p[:, 1] - 0.5).max()  # noqa: E731
    assert spread(unscaled.predict(image, ["L"] * 3, ["CC"] * 3)) < spread(probs)


def test_config_errors():
    with pytest.raises(ValueError, match="task: unknown 'tumour'; valid:"):
        ZeroShotConfig(task="tumour")
    with pytest.raises(ValueError, match="level: unknown 'study'; valid: image, breast, exam"):
        ZeroShotConfig(level="study")


def test_cli_on_tiny_data(tiny_data, tiny_checkpoint, shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", shared_cache)
    out = tmp_path / "reports"
    common = ["--data", tiny_data, "--checkpoint", tiny_checkpoint, "--split", "training",
              "--n-boot", "50", "--report-dir", str(out), "--no-progress"]  # size: the checkpoint's
    table = main(["--task", "mass", *common])
    assert table.columns.tolist() == ["prompts", "auroc", "macro_f1", "balanced_accuracy", "ece"]
    assert table["prompts"].iloc[0].startswith("mmg_clip, embedding ensemble, logit scale 14.3")
    stem = out / "mass_image_training_mmg_clip"
    for suffix in (".md", ".csv", ".tex", ".json", "_reliability.png", "_reliability.pdf", "_predictions.csv"):
        assert stem.with_name(stem.name + suffix).is_file(), suffix
    predictions = pd.read_csv(stem.with_name(stem.name + "_predictions.csv"))
    assert len(predictions) == 48 and np.allclose(predictions[["p(no mass)", "p(mass)"]].sum(axis=1), 1)
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5) and record["known"] == 48
    assert record["image_size"] == [128, 80]
    assert {r["metric"] for r in record["results"]} == {"auroc", "macro_f1", "balanced_accuracy", "ece"}
    table = main(["--task", "mass_shape", "--level", "breast", "--prompt-set", "cxr_clip", "--ensemble", "score",
                  "--no-use-logit-scale", *common])
    assert {"auroc", "auroc_std", "ece"} <= set(table.columns)
    assert (out / "mass_shape_breast_training_cxr_clip_score_noscale_reliability.png").is_file()


def test_split_studies_encode_a_split_once_between_them(tiny_data, tiny_checkpoint, tmp_path, monkeypatch):
    """The second study on the same checkpoint and split reads the cached image features (the
    encoder is not run); another checkpoint file encodes again."""
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    config = SplitConfig(data=tiny_data, checkpoint=tiny_checkpoint, split="training", progress=False)
    first = embed_split(config)
    monkeypatch.setattr(zeroshot_module, "image_features", lambda *a, **k: pytest.fail("encoded again"))
    again = embed_split(config)
    assert torch.equal(again.features, first.features)
    assert torch.equal(again.embedded.embeddings, first.embedded.embeddings)
    other = tmp_path / "other.pt"
    other.write_bytes(open(tiny_checkpoint, "rb").read())
    with pytest.raises(pytest.fail.Exception, match="encoded again"):
        embed_split(dataclasses.replace(config, checkpoint=str(other)))


def test_prompt_ablation_on_tiny_data(tiny_data, tiny_checkpoint, shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", shared_cache)
    out = tmp_path / "ablation"
    table = ablation_main(["--data", tiny_data, "--checkpoint", tiny_checkpoint, "--split", "training",
                           "--tasks", "mass", "mass_shape", "--prompt-sets", "mmg_clip", "cxr_clip",
                           "sentence_variants", "--image-size", "128", "80", "--n-boot", "30",
                           "--report-dir", str(out), "--no-progress"])
    assert len(table) == 2 * 3 * 2 * 2
    assert table.columns[:4].tolist() == ["task", "prompt set", "ensemble", "logit scale"]
    assert set(table["logit scale"]) == {"14.3", "none"}
    for suffix in (".md", ".csv", ".tex", ".png", ".pdf", ".json", "_long.csv"):
        assert (out / f"prompt_ablation{suffix}").is_file(), suffix
    long = pd.read_csv(out / "prompt_ablation_long.csv")
    auroc = long[long["metric"] == "auroc"].set_index(["task", "prompt set", "ensemble", "logit scale"])["value"]
    # binary: the logit scale changes no ranking; one prompt per class: the ensembles coincide
    assert auroc["mass", "mmg_clip", "embedding", "14.3"] == pytest.approx(auroc["mass", "mmg_clip", "embedding", "none"])
    assert auroc["mass", "mmg_clip", "score", "14.3"] == pytest.approx(auroc["mass", "mmg_clip", "embedding", "14.3"])
    ece = long[long["metric"] == "ece"].set_index(["task", "prompt set", "ensemble", "logit scale"])["value"]
    # several prompts per class: the ensembles give different probabilities
    assert ece["mass", "sentence_variants", "score", "14.3"] != pytest.approx(
        ece["mass", "sentence_variants", "embedding", "14.3"], abs=1e-6)
    assert ece["mass", "mmg_clip", "embedding", "14.3"] != pytest.approx(ece["mass", "mmg_clip", "embedding", "none"])


@pytest.mark.parametrize("config_class", [ZeroShotConfig, PromptAblationConfig, EmbeddingConfig, ReportConfig])
def test_split_level_configs_share_one_base_and_its_checks(config_class):
    assert issubclass(config_class, SplitConfig) and config_class().image_size == ()  # the checkpoint's size
    with pytest.raises(ValueError, match="split: unknown 'dev'; valid: training, validation, test"):
        config_class(split="dev")
    with pytest.raises(ValueError, match="two numbers"):
        config_class(image_size=(256,))


def test_embed_split_passes_the_text_encoder_folder_for_mammo_clip_imports(tiny_data, tiny_checkpoint, shared_cache,
                                                                          monkeypatch):
    import mammo_interp.zeroshot as zeroshot

    monkeypatch.setenv("MAMMO_INTERP_CACHE", shared_cache)
    seen, real = [], zeroshot.clip_from_checkpoint

    def spy(payload, source, text_encoder=None):
        seen.append(text_encoder)
        return real(payload, source, text_encoder)

    monkeypatch.setattr(zeroshot, "clip_from_checkpoint", spy)
    split = zeroshot.embed_split(SplitConfig(data=tiny_data, checkpoint=tiny_checkpoint, split="training",
                                             text_encoder="/models/BioClinicalBERT", progress=False))
    assert seen == ["/models/BioClinicalBERT"] and split.image_size == (128, 80)
    assert len(split.embedded.rows) == len(split.table)
