"""Metrics against independent computations: hand-worked cases, Mann-Whitney U, scikit-learn."""

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from models.data.labels import IGNORE_INDEX
from models.metrics import (
    Estimate,
    auroc,
    auroc_multilabel,
    auroc_ovr,
    balanced_accuracy,
    bootstrap,
    classification_metrics,
    macro_f1,
)


def _binary(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(rng.random(n) * 0.7 + 0.3 * y, 0, 1)


def _multiclass(n, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    probs = rng.dirichlet(np.ones(n_classes), n)
    probs[np.arange(n), y] += 0.4
    return y, probs / probs.sum(axis=1, keepdims=True)


def _multilabel(n, n_labels=5, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, (n, n_labels))
    return targets, rng.random((n, n_labels)) * 0.7 + 0.3 * targets


# --- single metrics ---------------------------------------------------------------------------


def test_auroc_hand_computed():
    # Positives 0.8, 0.4; negatives 0.6, 0.4. Pairs: (0.8>0.6) 1, (0.8>0.4) 1, (0.4<0.6) 0,
    # (0.4=0.4) 1/2 -> 2.5 / 4.
    assert auroc([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.4]) == pytest.approx(0.625)


def test_auroc_equals_mann_whitney_u():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + y, 1)  # rounded: ties included
    u = mannwhitneyu(scores[y == 1], scores[y == 0]).statistic
    assert auroc(y, scores) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))


def test_auroc_single_class_is_nan():
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_auroc_ovr_matches_sklearn_and_nan_for_absent_class():
    y, probs = _multiclass(200)
    expected = roc_auc_score(y, probs, multi_class="ovr", average=None)
    np.testing.assert_allclose(auroc_ovr(y, probs), expected)
    absent = auroc_ovr(np.where(y == 2, 0, y), probs)
    assert math.isnan(absent[2]) and np.isfinite(np.delete(absent, 2)).all()


def test_auroc_multilabel_nan_for_constant_label():
    targets, scores = _multilabel(100)
    targets[:, 1] = 1
    result = auroc_multilabel(targets, scores)
    assert math.isnan(result[1])
    assert result[0] == pytest.approx(roc_auc_score(targets[:, 0], scores[:, 0]))


def test_f1_and_balanced_accuracy_hand_computed():
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # F1 per class: 2/4, 4/5, 2/3; recall per class: 1/2, 1, 1/2.
    assert macro_f1(y_true, y_pred) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(2 / 3)


# --- Estimate -----------------------------------------------------------------------------------


def test_estimate_format():
    assert Estimate(0.8123, 0.79, 0.8344, 1000).format() == "0.812 (0.790\u20130.834)"
    assert Estimate(0.8123, 0.79, 0.8344, 1000).format(2) == "0.81 (0.79\u20130.83)"
    assert Estimate(math.nan, math.nan, math.nan, 0).format() == "n/a"
    assert Estimate(0.5, math.nan, math.nan, 0).format() == "0.500"


@pytest.mark.parametrize("estimate", [Estimate(0.8123, 0.79, 0.8344, 1000), Estimate(-0.25, -0.5, 0.125, 9),
                                      Estimate(0.5, math.nan, math.nan, 0)])
def test_a_formatted_cell_parses_back_to_its_rounded_estimate(estimate):
    parsed = Estimate.parse(estimate.format())
    expected = [round(v, 3) for v in (estimate.value, estimate.low, estimate.high)]
    assert [parsed.value, parsed.low, parsed.high] == pytest.approx(expected, nan_ok=True)
    assert math.isnan(Estimate.parse("n/a").value)
    with pytest.raises(ValueError, match="not an estimate cell"):
        Estimate.parse("0.5 [0.4, 0.6]")


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_contains_point_and_is_deterministic():
    y, scores = _binary(200)
    first = bootstrap(auroc, y, scores, n_boot=100, seed=3)
    assert first.low <= first.value <= first.high and first.n_boot == 100
    assert first.value == pytest.approx(auroc(y, scores))
    assert bootstrap(auroc, y, scores, n_boot=100, seed=3) == first
    assert bootstrap(auroc, y, scores, n_boot=100, seed=4) != first


def test_bootstrap_interval_shrinks_with_more_data():
    small = bootstrap(auroc, *_binary(50), n_boot=100)
    large = bootstrap(auroc, *_binary(2000), n_boot=100)
    assert large.high - large.low < (small.high - small.low) / 3


def test_bootstrap_skips_undefined_resamples():
    y, scores = np.array([1, 0, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    result = bootstrap(auroc, y, scores, n_boot=100)
    # P(the single positive is missed by a resample of 5) = (4/5)^5 ~ 0.33.
    assert 45 < result.n_boot < 90
    assert result.value == result.low == result.high == 1.0


def test_bootstrap_skips_value_errors():
    def fails_on_duplicates(y_true, y_score):
        if len(np.unique(y_score)) < len(y_score):
            raise ValueError("duplicates")
        return 1.0

    result = bootstrap(fails_on_duplicates, np.zeros(4), np.arange(4.0), n_boot=100)
    # A resample of 4 rows is duplicate-free with probability 4!/4^4 ~ 0.09.
    assert 0 < result.n_boot < 30 and result.value == 1.0


def test_bootstrap_all_undefined():
    result = bootstrap(auroc, np.ones(4), np.arange(4.0), n_boot=20)
    assert result.n_boot == 0 and math.isnan(result.value) and math.isnan(result.low)


# --- classification_metrics -------------------------------------------------------------------


def test_binary_matches_single_metrics_and_generic_bootstrap():
    y, scores = _binary(300)
    result = classification_metrics(y, scores, "binary", n_boot=100, seed=1)
    assert set(result) == {"auroc", "macro_f1", "balanced_accuracy"}
    assert result["auroc"].value == pytest.approx(roc_auc_score(y, scores))
    # The batched bootstrap sees the same resamples as the generic one and computes the same values.
    for name, metric, score in [
        ("auroc", auroc, scores),
        ("macro_f1", macro_f1, scores >= 0.5),
        ("balanced_accuracy", balanced_accuracy, scores >= 0.5),
    ]:
        generic = bootstrap(metric, y, score, n_boot=100, seed=1)
        assert result[name].value == pytest.approx(generic.value)
        assert (result[name].low, result[name].high) == pytest.approx((generic.low, generic.high))
        assert result[name].n_boot == generic.n_boot


def test_binary_accepts_two_column_probabilities():
    y, scores = _binary(100)
    two = classification_metrics(y, np.stack([1 - scores, scores], axis=1), "binary", n_boot=20)
    assert two == classification_metrics(y, scores, "binary", n_boot=20)


def test_multiclass_matches_single_metrics():
    y, probs = _multiclass(300)
    result = classification_metrics(y, probs, "multiclass", n_boot=100)
    per_class = roc_auc_score(y, probs, multi_class="ovr", average=None)
    assert result["auroc"].value == pytest.approx(per_class.mean())
    assert result["auroc_std"].value == pytest.approx(per_class.std())
    assert result["macro_f1"].value == pytest.approx(macro_f1(y, probs.argmax(axis=1)))
    assert result["balanced_accuracy"].value == pytest.approx(
        balanced_accuracy(y, probs.argmax(axis=1))
    )
    generic = bootstrap(macro_f1, y, probs.argmax(axis=1), n_boot=100)
    assert (result["macro_f1"].low, result["macro_f1"].high) == pytest.approx(
        (generic.low, generic.high)
    )
    assert all(e.low <= e.value <= e.high and e.n_boot == 100 for e in result.values())


def test_multiclass_auroc_excludes_class_absent_from_data():
    y, probs = _multiclass(200)
    y = np.where(y == 1, 0, y)  # class 1 is never true: its AUROC is undefined
    result = classification_metrics(y, probs, "multiclass", n_boot=50)
    assert result["auroc"].value == pytest.approx(np.nanmean(auroc_ovr(y, probs)))
    assert result["auroc"].n_boot == 50


def test_multilabel_matches_single_metrics():
    targets, scores = _multilabel(300)
    result = classification_metrics(targets, scores, "multilabel", n_boot=100)
    per_label = auroc_multilabel(targets, scores)
    predicted = (scores >= 0.5).astype(int)
    assert result["auroc"].value == pytest.approx(per_label.mean())
    assert result["auroc_std"].value == pytest.approx(per_label.std())
    assert result["macro_f1"].value == pytest.approx(macro_f1(targets, predicted))
    assert result["balanced_accuracy"].value == pytest.approx(
        np.mean([balanced_accuracy(targets[:, c], predicted[:, c]) for c in range(5)])
    )
    generic = bootstrap(macro_f1, targets, predicted, n_boot=100)
    assert (result["macro_f1"].low, result["macro_f1"].high) == pytest.approx(
        (generic.low, generic.high)
    )


def test_ignore_index_rows_dropped():
    y, probs = _multiclass(200)
    noisy_y = np.concatenate([y, [IGNORE_INDEX] * 20])
    noisy_probs = np.concatenate([probs, np.tile([[1.0, 0, 0, 0]], (20, 1))])
    assert classification_metrics(noisy_y, noisy_probs, "multiclass", n_boot=50) == (
        classification_metrics(y, probs, "multiclass", n_boot=50)
    )
    targets, scores = _multilabel(100)
    noisy_targets = np.concatenate([targets, np.full((10, 5), IGNORE_INDEX)])
    noisy_scores = np.concatenate([scores, np.ones((10, 5))])
    assert classification_metrics(noisy_targets, noisy_scores, "multilabel", n_boot=50) == (
        classification_metrics(targets, scores, "multilabel", n_boot=50)
    )


@pytest.mark.parametrize(
    ("y_true", "probs", "kind", "message"),
    [
        (np.zeros(5), np.zeros(5), "ordinal", "kind: unknown .ordinal.; valid: binary"),
        (np.zeros(5), np.zeros(4), "binary", "do not match"),
        (np.zeros(5), np.zeros((5, 3)), "binary", "do not match"),
        (np.zeros(5), np.zeros(5), "multiclass", "do not match"),
        (np.zeros((5, 3)), np.zeros((5, 2)), "multilabel", "differ"),
        (np.array([0, 1, 2]), np.zeros(3), "binary", "must lie in"),
        (np.full(3, IGNORE_INDEX), np.zeros(3), "binary", "no rows left"),
        (np.zeros(2), np.array([0.1, np.nan]), "binary", "finite"),
    ],
)
def test_classification_metrics_rejects_bad_input(y_true, probs, kind, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, probs, kind, n_boot=5)


def test_resamples_drawn_in_chunks_are_all_used(monkeypatch):
    monkeypatch.setattr("models.metrics._CHUNK_ELEMENTS", 1000)  # 3 resamples of 300 rows a chunk
    y, scores = _binary(300)
    result = classification_metrics(y, scores, "binary", n_boot=50)
    generic = bootstrap(auroc, y, scores, n_boot=50)
    assert result["auroc"].n_boot == generic.n_boot == 50
    assert (result["auroc"].low, result["auroc"].high) == pytest.approx((generic.low, generic.high))
