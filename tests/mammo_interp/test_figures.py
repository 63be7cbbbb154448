"""Every figure the package makes, rendered on small inputs in the package style: no two texts
overlap, heatmaps fade out where the heat is low, legends read in label order."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import analyses.prompt_ablation as prompt_ablation
import mammo_interp.channel_analysis as channel_analysis
import mammo_interp.localization as localization
import mammo_interp.saliency as saliency
from mammo_interp.calibration import plot_reliability, reliability_bins
from mammo_interp.embeddings import Separability, plot_probability, plot_tsne
from mammo_interp.metrics import ImageLocalization
from mammo_interp.plotting import heat_overlay, ordered, palette, text_overlaps
from mammo_interp.report import plot_coverage
from models.metrics import Estimate

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.fixture
def saved(monkeypatch):
    """Figures handed to ``save_figure`` by the figure functions, kept open for inspection."""
    figures = []
    for module in (localization, channel_analysis, saliency):
        monkeypatch.setattr(module, "save_figure", lambda fig, path, **_: figures.append(fig) or [])
    yield figures
    plt.close("all")


def _breast(height=64, width=40):
    image = np.zeros((height, width), np.float32)
    image[:, : width * 3 // 4] = 0.5
    return image


def _assert_no_overlaps(fig):
    assert text_overlaps(fig) == []


def test_the_overlap_check_finds_overlapping_texts():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.5, 0.5, "another label")
    assert text_overlaps(fig) == [("one label", "another label")]
    plt.close(fig)


def test_heat_fades_to_clear_where_heat_is_zero():
    fig, ax = plt.subplots()
    heat = np.linspace(0, 1, 40, dtype=np.float32)[None].repeat(8, 0)
    heat_overlay(ax, _breast(8, 40), heat)
    alpha = ax.get_images()[1].get_array()[..., 3]
    assert alpha[:, 0].max() == 0 and np.all(np.diff(alpha[0]) >= 0) and alpha[0, -1] > 0.5
    plt.close(fig)


def test_legends_read_in_label_order_with_ordinal_palettes():
    assert ordered(["BI-RADS 4", "BI-RADS 1", "BI-RADS 3", "BI-RADS 2"],
                   ["BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4", "BI-RADS 5"]) == [
        "BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4"]
    assert ordered(["z", "C", "A"], ["A", "B", "C"]) == ["A", "C", "z"]
    ramp = palette(["A", "B", "C", "D"], ordinal=True)
    luminance = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b, _ in ramp.values()]
    assert np.all(np.diff(luminance) > 0)  # sequential: darker to lighter in label order


def test_localization_overlay_and_channel_scatter(saved, tmp_path):
    heat = np.zeros((64, 40), np.float32)
    heat[20:40, 10:25] = np.linspace(0, 1, 15)
    item = ImageLocalization(np.array([[10, 20, 25, 40, 0.9]]), np.array([[12, 22, 26, 38]]), heat)
    methods = ["FActOR top-3", "Grad-CAM", "Integrated Gradients", "random 3 channels", "mean of channels",
               "oracle channel (val boxes)", "breast prior", "supervised reference (Grad-CAM)"]
    localization.overlay_figure([_breast()] * 2, {m: [item, item] for m in methods}, range(2),
                                ["R CC\n1201c29e", "L MLO\n47133a9f"], tmp_path / "o", "Mass")
    rng = np.random.default_rng(0)
    channel_analysis.plot_channel_diagnostics(
        {"alignment": rng.normal(size=64), "box_energy": rng.random(64), "oracle_channel": 5,
         "oracle_rank_by_alignment": 16, "channels": 64, "spearman_alignment_vs_box_energy": 0.78},
        3, str(tmp_path / "c"), "Mass, layer head (validation split)")
    assert len(saved) == 2
    for fig in saved:
        _assert_no_overlaps(fig)
    assert any("rank 17 of 64" in t.get_text() for t in saved[1].legends[0].get_texts())


def test_per_view_exam_figure(saved, tmp_path):
    heat = torch.zeros(4, 64, 40)
    heat[0, 10:30, 5:20] = 1.0
    explanation = saliency.ExamExplanation(
        "3f90691ed20f0000", np.stack([_breast()] * 4), np.array([True, True, True, False]),
        np.ones((4, 64, 40), bool), [np.array([[5, 10, 20, 30]])] + [np.zeros((0, 4))] * 3,
        [np.array([1])] + [np.zeros(0, int)] * 3, ["a", "b", "c", "d"], [None] * 4, 0.31,
        {"Grad-CAM per view, joint norm": heat},
        {"Shapley": np.array([0.02, -0.01, 0.005, np.nan]), "leave-one-view-out": np.array([0.02, 0.0, 0.0, 0.0]),
         "per-view prediction": np.array([0.4, 0.2, 0.3, np.nan])}, np.array([0.35, 0.2]))
    study = SimpleNamespace(config=SimpleNamespace(figure_method="gradcam", joint=True), category="Mass")
    saliency.SaliencyStudy.figure(study, explanation, tmp_path / "exam")
    _assert_no_overlaps(saved[0])


def test_reliability_coverage_and_prompt_ablation_figures():
    rng = np.random.default_rng(0)
    probs = rng.random(200)
    figures = [
        plot_reliability({"mmg_clip prompts, prompt embeddings averaged":
                          reliability_bins((rng.random(200) < probs).astype(int), probs)}, "mass, image level"),
        plot_coverage(pd.read_csv(REPORTS / "report_generation" / "breast_test_t0p6_coverage.csv"), 0.6,
                      "breast level, test split"),
        prompt_ablation.plot_ablation(pd.read_csv(REPORTS / "prompt_ablation" / "prompt_ablation_long.csv")),
    ]
    for fig in figures:
        _assert_no_overlaps(fig)
    plt.close("all")


def test_embedding_figures_order_their_legends():
    frame = pd.read_csv(REPORTS / "embeddings" / "image_test_opentsne_seed0_coordinates.csv").head(300)
    labels = frame[["malignancy", "birads", "density", "finding"]].astype(object)
    coords = {space: frame[[f"{space}_tsne1", f"{space}_tsne2"]].to_numpy() for space in ("encoder", "joint")}
    scores = {(name, space): Separability(300, 3, 0.1, 0.8, 0.7, 0.6) for name in labels for space in coords}
    tsne = plot_tsne(coords, labels, scores, "image embeddings, test split")
    _assert_no_overlaps(tsne)
    legends = {legend.get_title().get_text(): [t.get_text() for t in legend.get_texts()] for legend in
               (ax.get_legend() for ax in tsne.axes) if legend is not None}
    assert legends["BI-RADS"] == sorted(legends["BI-RADS"])
    assert legends["density"] == sorted(legends["density"])
    estimate = Estimate(-0.5, -0.55, -0.45, 1000)
    probability = plot_probability(coords, frame["p_malignant"].to_numpy(), list(labels["malignancy"]),
                                   {space: {"pearson_r": estimate, "spearman_rho": estimate} for space in coords},
                                   "t-SNE dimension 1 against zero-shot P(malignant)")
    _assert_no_overlaps(probability)
    plt.close("all")


def test_randomization_figure_with_every_method_and_stage():
    from mammo_interp.sanity import plot_randomization

    methods = ["FActOR top-k", "mean of channels", "random k channels", "oracle channel (val boxes)", "Grad-CAM",
               "Grad-CAM++", "LayerCAM", "gScoreCAM", "Integrated Gradients", "breast prior"]
    stages = ["image_projection", "bn2", "conv_head", *[f"blocks.{b}" for b in range(6, -1, -1)], "bn1", "conv_stem"]
    rng = np.random.default_rng(0)
    long = pd.DataFrame([{"method": m, "depth": d, "image": i, "spearman": rng.uniform(-0.2, 1.0), "ssim": 0.5}
                         for m in methods for d in range(1, len(stages) + 1) for i in range(3)])
    examples = {m: [rng.random((64, 40)) for _ in range(len(stages) + 1)] for m in methods}
    fig = plot_randomization(long, examples, _breast(), stages, "mass maps as the image side is randomized")
    _assert_no_overlaps(fig)
    plt.close(fig)


def test_difficulty_sweep_and_synthetic_exam_figures(tiny_masses):
    from analyses.difficulty_sweep import plot_sweep
    from analyses.synthetic_dataset_figure import pick_study, plot_exam
    from models.data.vindr import read_vindr
    rows = [{"difficulty": d, "test Mass AUROC": Estimate(v, v - 0.05, min(v + 0.05, 1.0), 1000),
             "test Suspicious Calcification AUROC": Estimate(v - 0.1, v - 0.15, v - 0.05, 1000)}
            for d, v in ((0.0, 0.95), (0.5, 0.8), (1.0, 0.6))]
    sweep = plot_sweep(rows, ("Mass", "Suspicious Calcification"), 0.9)
    _assert_no_overlaps(sweep)
    assert [t.get_text() for t in sweep.legends[0].get_texts()][:2] == ["mass", "suspicious calcification"]
    table = read_vindr(tiny_masses)
    exam = plot_exam(table, pick_study(table))
    _assert_no_overlaps(exam)
    titles = [ax.get_title() for ax in exam.axes]
    assert titles[0].startswith("R CC") and titles[3].startswith("L MLO")
    plt.close("all")
