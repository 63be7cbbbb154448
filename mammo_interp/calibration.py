"""Calibration of predicted probabilities: expected calibration error and reliability diagrams.

Zero-shot CLIP probabilities depend on the softmax temperature (the logit scale) even where the
ranking, and so AUROC, does not; ECE shows what a probability of 0.8 is worth. Bins are equal-width
on [0, 1], ``[k/M, (k+1)/M)`` with 1.0 in the last bin. Binary tasks bin the positive-class
probability against the positive rate; multi-class tasks bin the top-class confidence against the
accuracy of the top class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from models.data.labels import IGNORE_INDEX
from models.metrics import Estimate, bootstrap
from mammo_interp.plotting import styled

DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics, each ``(M,)``; ``confidence``/``observed`` are NaN in empty bins.

    ``observed`` is the positive rate (binary) or the top-class accuracy (multi-class).
    """

    edges: np.ndarray
    confidence: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    binary: bool

    @property
    def ece(self) -> float:
        """Count-weighted mean of ``|observed - confidence|`` over non-empty bins."""
        used = self.counts > 0
        gaps = np.abs(self.observed[used] - self.confidence[used])
        return float((self.counts[used] * gaps).sum() / self.counts.sum())


def _confidence_and_outcome(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(confidence, 0/1 outcome, binary) of rows not ignored; see the module docstring."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    if probs.ndim == 2 and probs.shape[1] == 2:
        probs = probs[:, 1]
    if len(y_true) != len(probs) or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} does not fit probs {probs.shape}: expected (N,) and "
                         "(N,), (N, 2) or (N, C)")
    keep = y_true != IGNORE_INDEX
    y_true, probs = y_true[keep].astype(np.int64), probs[keep]
    if not len(y_true):
        raise ValueError("no rows with a known label")
    if probs.ndim == 1:
        return probs, (y_true == 1).astype(float), True
    return probs.max(axis=1), (probs.argmax(axis=1) == y_true).astype(float), False


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Bin ``(N,)`` labels against probabilities ``(N,)`` (binary positive class), ``(N, 2)`` or
    ``(N, C)``; rows labelled :data:`IGNORE_INDEX` are dropped."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence, outcome, binary = _confidence_and_outcome(y_true, probs)
    index = np.clip((confidence * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        observed = np.bincount(index, weights=outcome, minlength=n_bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), mean_conf, observed, counts, binary)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE of :func:`reliability_bins` (0 = calibrated, at most 1)."""
    return reliability_bins(y_true, probs, n_bins).ece


def ece_estimate(y_true: np.ndarray, probs: np.ndarray, n_bins: int = DEFAULT_BINS, n_boot: int = 1000,
                 seed: int = 0) -> Estimate:
    """ECE with a percentile-bootstrap 95 % CI (:func:`models.metrics.bootstrap`)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    keep = y_true != IGNORE_INDEX
    return bootstrap(lambda y, p: expected_calibration_error(y, p, n_bins), y_true[keep], probs[keep],
                     n_boot=n_boot, seed=seed)


@styled
def plot_reliability(curves: Mapping[str, ReliabilityBins], title: str = "") -> Figure:
    """Reliability diagram: observed vs mean confidence per bin (one line per curve, ECE in the
    legend), the diagonal, and the bin counts below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.0, 4.4), sharex=True,
                                      gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    binary = all(b.binary for b in curves.values())
    for k, (name, bins) in enumerate(curves.items()):
        color = palette[k % len(palette)]
        used = bins.counts > 0
        top.plot(bins.confidence[used], bins.observed[used], marker="o", ms=3, lw=1.2, color=color,
                 label=f"{name} (ECE {bins.ece:.3f})")
        width = (bins.edges[1] - bins.edges[0]) / max(1, len(curves))
        bottom.bar(bins.edges[:-1] + k * width, bins.counts, width=width, align="edge", color=color,
                   alpha=0.8)
    top.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), ylabel="positive rate" if binary else "accuracy", title=title)
    top.legend(frameon=False, loc="upper left")
    bottom.set(xlabel="predicted probability" if binary else "top-class confidence", ylabel="count")
    return fig
