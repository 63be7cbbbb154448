"""Embedding figures: t-SNE determinism, correlations against scipy/pandas, separability on
separable vs random labels, item labels, and the CLI on the tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mammo_interp.embeddings import (
    EmbeddingConfig, correlations, item_labels, main, multiple_correlation, separability, tsne,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clusters(n_per: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight clusters along different axes of a 16-d space: ``(3 n_per, 16)`` and labels."""
    rng = np.random.default_rng(seed)
    centres = 10 * np.eye(16)[:3]
    labels = np.repeat([0, 1, 2], n_per)
    return centres[labels] + rng.normal(scale=0.5, size=(len(labels), 16)), labels


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_tsne_same_seed_same_coordinates(backend):
    x, _ = _clusters(15)
    first, again = tsne(x, seed=0, backend=backend), tsne(x, seed=0, backend=backend)
    assert first.shape == (45, 2) and np.isfinite(first).all()
    assert np.array_equal(first, again)
    if backend == "opentsne":  # the seed drives the initialisation's jitter
        assert not np.allclose(first, tsne(x, seed=1, backend=backend))


def test_tsne_rejects_bad_input():
    with pytest.raises(ValueError, match="backend"):
        tsne(np.zeros((10, 3)), backend="umap")
    with pytest.raises(ValueError, match="at least 4"):
        tsne(np.zeros((3, 3)))


def test_correlations_equal_scipy_and_pandas():
    rng = np.random.default_rng(4)
    x = rng.normal(size=50)
    y = x ** 3 + rng.normal(scale=0.5, size=50)  # monotone-ish, not linear: r and rho differ
    found = correlations(x, y, n_boot=200, seed=0)
    assert found["pearson_r"].value == pytest.approx(stats.pearsonr(x, y)[0])
    assert found["pearson_r"].value == pytest.approx(pd.Series(x).corr(pd.Series(y)))
    assert found["spearman_rho"].value == pytest.approx(stats.spearmanr(x, y)[0])
    assert found["spearman_rho"].value == pytest.approx(pd.Series(x).corr(pd.Series(y), method="spearman"))
    assert found["pearson_p"].value == pytest.approx(stats.pearsonr(x, y)[1])
    assert found["spearman_p"].value == pytest.approx(stats.spearmanr(x, y)[1])
    assert found["spearman_rho"].value != pytest.approx(found["pearson_r"].value, abs=1e-3)
    assert found["pearson_r"].low < found["pearson_r"].value < found["pearson_r"].high
    assert found["pearson_r"].n_boot == 200
    # rotation-free R: exact for a linear target, at least |r| of any single coordinate
    coords = rng.normal(size=(50, 2))
    assert multiple_correlation(coords, 2 * coords[:, 0] - 3 * coords[:, 1]) == pytest.approx(1.0)
    assert multiple_correlation(coords, y) >= abs(stats.pearsonr(coords[:, 0], y)[0]) - 1e-12


def test_separability_high_on_clusters_chance_on_random_labels():
    x, labels = _clusters(30)
    separated = separability(x, labels.tolist(), metric="euclidean", k=5, n_folds=5, seed=0)
    assert separated.n == 90 and separated.classes == 3
    assert separated.silhouette > 0.8 and separated.knn_accuracy == 1.0 and separated.knn_balanced_accuracy == 1.0
    assert separated.chance_accuracy == pytest.approx(1 / 3)
    shuffled = np.random.default_rng(1).permutation(labels)
    random = separability(x, shuffled.tolist(), metric="euclidean", k=5, n_folds=5, seed=0)
    assert random.silhouette < 0.05 and random.knn_accuracy < 0.55  # chance 1/3
    # unknown labels and classes smaller than the fold count are left out
    partial = [None] * 10 + labels[10:].tolist()
    partial[-1] = "rare"
    dropped = separability(x, partial, metric="cosine", n_folds=5)
    assert dropped.n == 79 and dropped.classes == 3
    single = separability(x, ["a"] * 90)
    assert single.classes == 1 and np.isnan(single.silhouette)


def test_item_labels_per_breast():
    table = pd.DataFrame({
        "study_id": ["s"] * 4, "laterality": ["L", "L", "R", "R"], "view": ["CC", "MLO", "CC", "MLO"],
        "image_id": list("abcd"), "path": "unused", "boxes": [[]] * 4,
        "finding_categories": [["Mass"], ["Suspicious Calcification"], ["No Finding"], ["No Finding"]],
        "malignancy": [1.0, 1.0, 0.0, 0.0], "density": ["B", "B", "C", "D"], "breast_birads": [4, 4, 1, 1],
    })
    labels = item_labels(table, [(0, 1), (2, 3), (0,)])
    assert labels["finding"].tolist() == ["multiple", "no finding", "mass"]
    assert labels["malignancy"].tolist() == ["malignant", "not malignant", "malignant"]
    assert labels["density"].fillna("unknown").tolist() == ["B", "unknown", "B"]  # C vs D disagree
    assert labels["birads"].tolist() == ["BI-RADS 4", "BI-RADS 1", "BI-RADS 4"]


def test_config_errors():
    with pytest.raises(ValueError, match="backend"):
        EmbeddingConfig(backend="umap")
    with pytest.raises(ValueError, match="labels"):
        EmbeddingConfig(labels=("shape",))


@pytest.mark.slow
def test_cli_on_tiny_data(tiny_masses, tiny_checkpoint, tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path_factory.getbasetemp() / "shared-cache"))
    out = tmp_path / "embeddings"
    args = ["--data", str(tiny_masses), "--checkpoint", str(tiny_checkpoint), "--split", "training",
            "--image-size", "128", "80", "--n-boot", "20", "--n-folds", "3", "--knn-k", "3",
            "--report-dir", str(out), "--no-progress"]
    result = main(args)
    stem = out / "image_training_opentsne_seed0"
    for suffix in ("_tsne.png", "_tsne.pdf", "_malignancy.png", "_malignancy.pdf", "_separability.md",
                   "_separability.csv", "_separability.tex", "_correlation.md", "_correlation.csv",
                   "_correlation.tex", "_coordinates.csv", ".json"):
        assert stem.with_name(stem.name + suffix).is_file(), suffix
    n = len(result.probability)
    assert set(result.coords) == {"encoder", "joint"} and all(c.shape == (n, 2) for c in result.coords.values())
    assert ((result.probability > 0) & (result.probability < 1)).all()
    table = result.separability
    assert len(table) == 4 * 2 * 2  # labels x spaces x (embedding, t-SNE)
    assert set(table["representation"]) == {"embedding", "t-SNE 2-D"}
    assert result.correlation["space"].tolist() == ["encoder", "joint"]
    coordinates = pd.read_csv(stem.with_name(stem.name + "_coordinates.csv"))
    assert np.allclose(coordinates[["joint_tsne1", "joint_tsne2"]].to_numpy(), result.coords["joint"])
    assert json.loads(stem.with_suffix(".json").read_text())["items"] == n
    # the same seed reproduces the map end to end
    again = main([*args, "--labels", "malignancy"])
    assert np.array_equal(again.coords["joint"], result.coords["joint"])
