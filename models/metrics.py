"""Classification metrics with percentile-bootstrap confidence intervals.

The fine-tuning and zero-shot tables of the MMG-CLIP / MAM-CLIP / Mammo-CLIP papers report AUROC
(binary, or the one-vs-rest mean ± std over classes), macro-F1 and balanced accuracy, each with a
1000-sample bootstrap 95 % CI; this module produces those numbers.

- Single metrics (:func:`auroc`, :func:`auroc_ovr`, :func:`auroc_multilabel`, :func:`macro_f1`,
  :func:`balanced_accuracy`) wrap scikit-learn; an undefined AUROC (one class only) is NaN.
- :func:`bootstrap` wraps any ``metric(y_true, y_score)``; a resample on which the metric is
  undefined (NaN or ``ValueError``) is skipped, and :attr:`Estimate.n_boot` counts the ones kept.
- :func:`classification_metrics` computes a whole table row. Calling scikit-learn once per resample
  and class takes 10-40 s per row, so it evaluates all resamples of a chunk at once (AUROC through
  the rank-sum identity, F1 and balanced accuracy from batched confusion matrices) with the same
  definitions as the scikit-learn wrappers, which the tests check.
- Image-text retrieval metrics are in :mod:`models.retrieval_metrics`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from models.data.labels import IGNORE_INDEX
from models.errors import check_choice

KINDS = ("binary", "multiclass", "multilabel")

# Resampled index arrays are built this many elements at a time, bounding memory for large N.
_CHUNK_ELEMENTS = 4_000_000
_FORMATTED = re.compile(r"n/a|(-?[\d.]+)(?: \((-?[\d.]+)\u2013(-?[\d.]+)\))?")


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap percentile interval.

    ``n_boot`` is the number of resamples the interval rests on: those on which the metric was
    defined. ``low``/``high`` are NaN when none was.
    """

    value: float
    low: float
    high: float
    n_boot: int

    def format(self, digits: int = 3) -> str:
        """``"0.812 (0.790–0.834)"`` (en dash); ``"n/a"`` for a NaN value, no interval if NaN."""
        if math.isnan(self.value):
            return "n/a"
        text = f"{self.value:.{digits}f}"
        if math.isnan(self.low) or math.isnan(self.high):
            return text
        return f"{text} ({self.low:.{digits}f}\u2013{self.high:.{digits}f})"

    @classmethod
    def parse(cls, text: str) -> Estimate:
        """The estimate a table cell written by ``format`` shows (``n_boot`` is not in the cell: 0)."""
        match = _FORMATTED.fullmatch(str(text).strip())
        if match is None:
            raise ValueError(f"not an estimate cell (expected '0.812 (0.790\u20130.834)' or 'n/a'): {text!r}")
        value, low, high = (float(group) if group else math.nan for group in match.groups())
        return cls(value, low, high, 0)


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUROC; NaN when ``y_true`` holds a single class (undefined)."""
    y_true = np.asarray(y_true)
    if np.unique(y_true).size < 2:
        return math.nan
    return float(roc_auc_score(y_true, scores))


def auroc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class one-vs-rest AUROC of ``(N,)`` integer labels against ``(N, C)`` scores.

    A class absent from ``y_true``, or the only class present, gets NaN.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    return np.array([auroc(y_true == c, probs[:, c]) for c in range(probs.shape[1])])


def auroc_multilabel(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-label AUROC, ``(N, C)`` 0/1 targets vs ``(N, C)`` scores; NaN if a label is constant."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    return np.array([auroc(targets[:, c], scores[:, c]) for c in range(targets.shape[1])])


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over classes (or over labels for ``(N, C)`` multilabel indicators).

    A class with no true and no predicted sample has no F1 and is left out of the mean.
    """
    return float(f1_score(y_true, y_pred, average="macro", zero_division=np.nan))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": such classes are left out, as intended.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_score: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """``metric`` on the full data with a percentile CI over ``n_boot`` resamples of the rows.

    Rows (axis 0 of both arrays) are drawn with replacement by ``np.random.default_rng(seed)``.
    Resamples on which ``metric`` returns NaN or raises ``ValueError`` are skipped.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true and y_score differ in length: {len(y_true)} vs {len(y_score)}")

    def values(indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"metric": np.array([_defined(metric, y_true[i], y_score[i]) for i in indices])}

    return bootstrap_statistics(values, len(y_true), n_boot, seed, level)["metric"]


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    kind: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """AUROC, macro-F1 and balanced accuracy with bootstrap 95 % CIs for one model on one test set.

    Args:
        y_true: ``(N,)`` labels (binary 0/1, multiclass ``0..C-1``) or ``(N, C)`` 0/1 multilabel
            targets; rows holding :data:`IGNORE_INDEX` are dropped first.
        probs: binary: ``(N,)`` positive-class scores or ``(N, 2)`` probabilities; else ``(N, C)``.
        kind: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.

    Returns:
        ``"auroc"``: binary AUROC, or the mean of the per-class (one-vs-rest / per-label) AUROCs
        over the classes where it is defined on the full data; ``"auroc_std"`` (multiclass and
        multilabel only): their population std (ddof 0), also bootstrapped; ``"macro_f1"``;
        ``"balanced_accuracy"`` (multilabel: the mean of per-label balanced accuracies).
        Predictions: argmax for multiclass, score ``>= 0.5`` for binary and multilabel. All share
        one set of resamples; an AUROC resample is skipped when any class used on the full data is
        undefined in it, so the mean is always over the same classes.

    Raises:
        ValueError: unknown ``kind``, shapes that do not fit it, labels out of range, non-finite
            scores, or no rows left.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    check_choice("kind", kind, KINDS)
    y_true, probs = _checked(y_true, probs, kind)
    if kind == "multilabel":
        values = _multilabel_values(y_true.astype(bool), probs)
    elif kind == "multiclass":
        values = _multiclass_values(y_true.astype(np.int64), probs)
    else:
        values = _binary_values(y_true.astype(bool), probs)
    return bootstrap_statistics(values, len(y_true), n_boot, seed, 0.95)


def _defined(metric: Callable[[np.ndarray, np.ndarray], float], y_true, y_score) -> float:
    """``metric(y_true, y_score)``; NaN where it raises ``ValueError``, i.e. is undefined."""
    try:
        return float(metric(y_true, y_score))
    except ValueError:
        return math.nan


def bootstrap_statistics(
    values: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    n_boot: int,
    seed: int,
    level: float,
) -> dict[str, Estimate]:
    """Percentile bootstrap of the statistics ``values(indices)`` computes per row of ``indices``.

    ``values`` maps a ``(B, n)`` array of row indices to named ``(B,)`` arrays; the full data is the
    single row ``arange(n)``. NaN entries are undefined resamples and are skipped.
    """
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1, n_boot >= 1 and 0 < level < 1; got {n}, {n_boot}, {level}")
    points = values(np.arange(n)[None])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    parts = [
        values(rng.integers(0, n, size=(min(chunk, n_boot - start), n)))
        for start in range(0, n_boot, chunk)
    ]
    estimates = {}
    for name, point in points.items():
        resampled = np.concatenate([part[name] for part in parts])
        resampled = resampled[np.isfinite(resampled)]
        low, high = (
            np.percentile(resampled, [50 * (1 - level), 50 * (1 + level)])
            if resampled.size
            else (math.nan, math.nan)
        )
        estimates[name] = Estimate(float(point[0]), float(low), float(high), int(resampled.size))
    return estimates


def _checked(y_true: np.ndarray, probs: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and labels for ``kind``; drop ignore-index rows; binary scores to ``(N,)``."""
    if kind == "binary" and probs.ndim == 2 and probs.shape[1] == 2:
        probs = probs[:, 1]
    expected = {"binary": (1, 1), "multiclass": (1, 2), "multilabel": (2, 2)}[kind]
    if (y_true.ndim, probs.ndim) != expected or len(y_true) != len(probs):
        raise ValueError(
            f"{kind}: y_true {y_true.shape} and probs {probs.shape} do not match; expected"
            " y_true (N,) with probs (N,) or (N, 2) for binary, y_true (N,) with probs (N, C) for"
            " multiclass, y_true and probs both (N, C) for multilabel"
        )
    if kind == "multilabel" and y_true.shape != probs.shape:
        raise ValueError(f"multilabel: y_true {y_true.shape} and probs {probs.shape} differ")
    keep = (y_true != IGNORE_INDEX).all(axis=1) if kind == "multilabel" else y_true != IGNORE_INDEX
    y_true, probs = y_true[keep], probs[keep]
    if not len(y_true):
        raise ValueError(f"no rows left after dropping rows with ignore index {IGNORE_INDEX}")
    if not np.isfinite(probs).all():
        raise ValueError("probs must be finite")
    n_classes = probs.shape[1] if kind == "multiclass" else 2
    if not np.isin(y_true, np.arange(n_classes)).all():
        raise ValueError(f"{kind}: y_true values must lie in 0..{n_classes - 1} (or be ignored)")
    return y_true, probs


def _binary_values(y_true: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], dict]:
    """Batched statistics for :func:`classification_metrics` with ``kind="binary"``."""
    predicted = scores >= 0.5

    def values(indices: np.ndarray) -> dict[str, np.ndarray]:
        confusion = _confusion(y_true[indices], predicted[indices], 2)
        return {
            "auroc": _auroc_rows(y_true[indices], scores[indices]),
            "macro_f1": _nanmean(_f1_per_class(confusion)),
            "balanced_accuracy": _nanmean(_recall_per_class(confusion)),
        }

    return values


def _multiclass_values(y_true: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], dict]:
    """Batched statistics for :func:`classification_metrics` with ``kind="multiclass"``."""
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    used = np.isfinite(auroc_ovr(y_true, probs))

    def values(indices: np.ndarray) -> dict[str, np.ndarray]:
        labels = y_true[indices]
        confusion = _confusion(labels, predicted[indices], n_classes)
        per_class = [_auroc_rows(labels == c, probs[indices, c]) for c in np.flatnonzero(used)]
        return {
            **_mean_std(per_class, len(indices)),
            "macro_f1": _nanmean(_f1_per_class(confusion)),
            "balanced_accuracy": _nanmean(_recall_per_class(confusion)),
        }

    return values


def _multilabel_values(targets: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], dict]:
    """Batched statistics for :func:`classification_metrics` with ``kind="multilabel"``."""
    predicted = scores >= 0.5
    used = np.isfinite(auroc_multilabel(targets, scores))

    def values(indices: np.ndarray) -> dict[str, np.ndarray]:
        confusions = [
            _confusion(targets[indices, c], predicted[indices, c], 2)
            for c in range(targets.shape[1])
        ]
        per_label = [
            _auroc_rows(targets[indices, c], scores[indices, c]) for c in np.flatnonzero(used)
        ]
        return {
            **_mean_std(per_label, len(indices)),
            "macro_f1": _nanmean(np.stack([_f1_per_class(m)[:, 1] for m in confusions], axis=1)),
            "balanced_accuracy": np.stack(
                [_nanmean(_recall_per_class(m)) for m in confusions], axis=1
            ).mean(axis=1),
        }

    return values


def _auroc_rows(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``(B, n)`` arrays via the Mann-Whitney rank sum (ties count one half).

    NaN for a row holding a single class.
    """
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.where(positive, rankdata(scores, axis=1), 0.0).sum(axis=1)
    pairs = (n_pos * n_neg).astype(float)
    return np.divide(
        rank_sum - n_pos * (n_pos + 1) / 2, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0
    )


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(B, C, C)`` confusion matrices (rows true, columns predicted) of ``(B, n)`` label rows."""
    batch = y_true.shape[0]
    flat = (np.arange(batch)[:, None] * n_classes + y_true) * n_classes + y_pred
    counts = np.bincount(flat.ravel(), minlength=batch * n_classes * n_classes)
    return counts.reshape(batch, n_classes, n_classes)


def _f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """``(B, C)`` F1 = 2TP / (2TP + FP + FN); NaN for a class neither true nor predicted."""
    true_pos = np.diagonal(confusion, axis1=1, axis2=2)
    return safe_ratio(2 * true_pos, confusion.sum(axis=2) + confusion.sum(axis=1))


def _recall_per_class(confusion: np.ndarray) -> np.ndarray:
    """``(B, C)`` recall; NaN for a class absent from the true labels."""
    return safe_ratio(np.diagonal(confusion, axis1=1, axis2=2), confusion.sum(axis=2))


def _mean_std(per_class: list[np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Mean and std over classes of per-class ``(B,)`` AUROCs; a row with any NaN is undefined.

    Without any class both are NaN.
    """
    if not per_class:
        return {"auroc": np.full(batch, np.nan), "auroc_std": np.full(batch, np.nan)}
    stacked = np.stack(per_class, axis=1)
    return {"auroc": stacked.mean(axis=1), "auroc_std": stacked.std(axis=1)}


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (without a warning) when all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=-1)
