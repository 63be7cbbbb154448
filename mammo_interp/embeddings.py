"""Embedding-space figures with numbers behind them: ``python -m mammo_interp.embeddings``.

MMG-CLIP (seed 001, Figure 7) shows t-SNE maps of image-encoder features and of projected joint-space
embeddings, and plots t-SNE dimension 1 against the model's malignancy probability. A t-SNE picture
is not evidence by itself, so each claim here is also a number:

- **t-SNE** (openTSNE by default, ``--backend sklearn`` to compare; cosine distances, PCA
  initialisation, one thread) of the **encoder** space (pooled image-encoder features ``(G, F)``: a
  multi-view item averages its views' features, the vector the projection head receives) and the
  **joint** space (the normalized projections ``(G, D)``), coloured by malignancy, BI-RADS, density and
  finding, side by side. Same seed, same data => identical coordinates (tested). openTSNE's seed
  sets the PCA initialisation's jitter, so another seed gives another layout; scikit-learn's PCA
  initialisation has no jitter and its layout may not depend on the seed at all.
- **Figure-7 panel**: t-SNE dimension 1 against the zero-shot malignancy probability
  (:mod:`mammo_interp.zeroshot`) with Pearson and Spearman correlations (scipy) and bootstrap 95 %
  CIs. t-SNE axes are arbitrary up to rotation and sign, so the table also gives the rotation-free
  multiple correlation R of the probability with both coordinates (least squares).
- **Separability** of each label in each space, on the embeddings (cosine) and on the 2-D t-SNE
  (euclidean): silhouette score and the accuracy / balanced accuracy of a cross-validated
  k-nearest-neighbour classifier (stratified folds), beside the majority-class accuracy a constant
  guess reaches. Items with an unknown label, and classes with fewer items than folds, are left out.

Writes ``REPORT_DIR/{level}_{split}_{backend}_seed{seed}`` + ``_tsne`` / ``_malignancy`` figures
(PNG, PDF), ``_separability`` and ``_correlation`` tables (md, CSV, LaTeX), ``_coordinates.csv``
(every item's coordinates, labels and probability) and a JSON record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import asdict, dataclass, field
from pathlib import Path

import models  # noqa: F401 - runtime guard before torch/timm/transformers
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mammo_interp.plotting import legend_handles, ordered, palette, plt, save_figure, styled
from mammo_interp.prompts import load_prompt_sets, prompt_set_for
from mammo_interp.zero_shot_classifier import ZeroShotClassifier
from mammo_interp.zeroshot import SplitConfig, embed_split, level_targets
from models.cli import parse_command, run_main
from models.data import schema
from models.data.labels import BIRADS5, DENSITY, FINDINGS, IGNORE_INDEX, MALIGNANCY
from models.errors import check_choice
from models.io import atomic_write, save_json
from models.metrics import Estimate, bootstrap
from models.report_tables import write_table

BACKENDS = ("opentsne", "sklearn")
SPACES = ("encoder", "joint")
LABELS = ("malignancy", "birads", "density", "finding")
_ENCODERS = {"malignancy": MALIGNANCY, "birads": BIRADS5, "density": DENSITY}
_FINDING_NAMES = {"Mass": "mass", "Suspicious Calcification": "calcification",
                  "Architectural Distortion": "architectural distortion",
                  "Asymmetry": "asymmetry", "Focal Asymmetry": "asymmetry"}
_UNKNOWN_COLOR = "#BBBBBB"
_ORDINAL = {"birads", "density"}
_FINDING_ORDER = ("no finding", "mass", "calcification", "architectural distortion", "asymmetry", "multiple")
_TITLES = {"birads": "BI-RADS", "density": "density", "malignancy": "malignancy", "finding": "finding"}


@dataclass(frozen=True)
class EmbeddingConfig(SplitConfig):
    """t-SNE figures, the Figure-7 correlation and separability of one split at one level."""

    backend: str = field(default="opentsne", metadata={"help": f"t-SNE implementation: {BACKENDS}"})
    perplexity: float = field(default=30.0, metadata={
        "help": "t-SNE perplexity (lowered to (items - 1) / 3 for small sets)"})
    labels: tuple[str, ...] = field(default=LABELS, metadata={"help": f"colourings, from {LABELS}"})
    knn_k: int = field(default=5, metadata={"help": "neighbours of the kNN classifier"})
    n_folds: int = field(default=5, metadata={"help": "stratified cross-validation folds for kNN"})
    prompt_set: str | None = field(default=None, metadata={
        "help": "prompt set for the malignancy probability; default: the first covering it"})
    prompt_file: str | None = field(default=None, metadata={"help": "prompt-set JSON; default: packaged"})
    report_dir: str = field(default="reports/embeddings", metadata={"help": "where outputs go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", self.backend, BACKENDS)
        unknown = [label for label in self.labels if label not in LABELS]
        if unknown or not self.labels:
            raise ValueError(f"labels {list(self.labels)}: each must be one of {LABELS}")


# --- t-SNE -----------------------------------------------------------------------------------


def tsne(x: np.ndarray, seed: int = 0, backend: str = "opentsne", perplexity: float = 30.0,
         metric: str = "cosine") -> np.ndarray:
    """2-D t-SNE coordinates ``(N, 2)`` of ``x`` ``(N, F)``; deterministic for a seed (one thread).

    Perplexity is capped at ``(N - 1) / 3`` (each point needs about 3 x perplexity neighbours).

    Raises:
        ValueError: an unknown backend or fewer than 4 points.
    """
    x = np.asarray(x, dtype=np.float64)
    check_choice("backend", backend, BACKENDS)
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    perplexity = effective_perplexity(perplexity, len(x))
    with threadpool_limits(1):  # one BLAS/OpenMP thread: same numbers whatever the machine's load
        return _tsne(x, seed, backend, perplexity, metric)


def _tsne(x: np.ndarray, seed: int, backend: str, perplexity: float, metric: str) -> np.ndarray:
    if backend == "opentsne":
        from openTSNE import TSNE as OpenTSNE

        return np.asarray(OpenTSNE(n_components=2, perplexity=perplexity, metric=metric,
                                   initialization="pca", random_state=seed, n_jobs=1).fit(x))
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=perplexity, metric=metric, init="pca",
                random_state=seed, n_jobs=1).fit_transform(x)


def effective_perplexity(perplexity: float, n: int) -> float:
    """``min(perplexity, (n - 1) / 3)``: the perplexity t-SNE can use on ``n`` points."""
    return float(min(perplexity, (n - 1) / 3))


# --- numbers ---------------------------------------------------------------------------------


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Pearson ``r`` and Spearman ``rho`` of ``(N,)`` arrays with percentile-bootstrap 95 % CIs,
    and their two-sided p-values (scipy; as :class:`Estimate` without an interval)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return {
        "pearson_r": bootstrap(lambda a, b: stats.pearsonr(a, b)[0], x, y, n_boot, seed),
        "pearson_p": Estimate(float(pearson.pvalue), np.nan, np.nan, 0),
        "spearman_rho": bootstrap(lambda a, b: stats.spearmanr(a, b)[0], x, y, n_boot, seed),
        "spearman_p": Estimate(float(spearman.pvalue), np.nan, np.nan, 0),
    }


def multiple_correlation(coords: np.ndarray, y: np.ndarray) -> float:
    """R of the least-squares fit ``y ~ 1 + coords`` (``(N, K)``): the best correlation of ``y``
    with any linear direction of the coordinates, so it ignores t-SNE's arbitrary rotation."""
    design = np.column_stack([np.ones(len(coords)), coords])
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(np.corrcoef(fitted, y)[0, 1]) if np.std(fitted) > 0 else 0.0


@dataclass(frozen=True)
class Separability:
    """How well one labelling separates in one representation (NaN when it cannot be measured)."""

    n: int
    classes: int
    silhouette: float
    knn_accuracy: float
    knn_balanced_accuracy: float
    chance_accuracy: float


def separability(x: np.ndarray, labels: Sequence[object], metric: str = "cosine", k: int = 5,
                 n_folds: int = 5, seed: int = 0) -> Separability:
    """Silhouette and cross-validated kNN accuracy of ``labels`` ``(N,)`` (None = unknown) on ``x``
    ``(N, F)``. Classes with fewer than ``n_folds`` items are dropped; ``chance_accuracy`` is the
    majority class's share of what is left."""
    labels = pd.Series(list(labels), dtype=object)
    known = labels.notna().to_numpy()
    counts = labels[known].value_counts()
    keep = known & labels.isin(counts.index[counts >= n_folds]).to_numpy()
    y, x = labels[keep].astype(str).to_numpy(), np.asarray(x)[keep]
    n_classes = len(set(y))
    if n_classes < 2:
        return Separability(len(y), n_classes, np.nan, np.nan, np.nan, np.nan)
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    neighbours = min(k, len(y) - len(y) // n_folds - 1)
    predicted = cross_val_predict(KNeighborsClassifier(neighbours, metric=metric), x, y, cv=folds)
    return Separability(len(y), n_classes, float(silhouette_score(x, y, metric=metric)),
                        float(accuracy_score(y, predicted)), float(balanced_accuracy_score(y, predicted)),
                        float(pd.Series(y).value_counts(normalize=True).iloc[0]))


def item_labels(table: pd.DataFrame, rows: Sequence[Sequence[int]]) -> pd.DataFrame:
    """Per item (``rows`` of ``table``) its label names, None where unknown: ``malignancy``,
    ``birads``, ``density`` (:func:`level_targets` rules) and ``finding`` ("no finding", the one
    finding kind of its views, or "multiple")."""
    out = {}
    for name, encoder in _ENCODERS.items():
        targets = level_targets(table, name, rows)
        out[name] = [None if t == IGNORE_INDEX else encoder.class_names[t] for t in targets]
    table = table.reset_index(drop=True)
    per_row = [FINDINGS.encode(value) for value in table[FINDINGS.column]]
    findings = []
    for members in rows:
        vectors = [per_row[i] for i in members if (per_row[i] != IGNORE_INDEX).all()]
        if not vectors:
            findings.append(None)
            continue
        present = np.max(vectors, axis=0) > 0
        kinds = {_FINDING_NAMES.get(FINDINGS.class_names[c], "other") for c in np.flatnonzero(present)
                 if FINDINGS.class_names[c] != schema.NO_FINDING}
        findings.append("no finding" if not kinds else kinds.pop() if len(kinds) == 1 else "multiple")
    out["finding"] = findings
    return pd.DataFrame(out)


# --- figures ---------------------------------------------------------------------------------


def _palette(name: str, values: Sequence[object]) -> dict[str, Any]:
    """Colours of one label column's values in reading order: BI-RADS and density (ordinal) on a
    sequential palette, the others colour-blind-safe qualitative."""
    encoder = _ENCODERS.get(name)
    names = ordered((str(v) for v in values if v is not None and not pd.isna(v)),
                    encoder.class_names if encoder else _FINDING_ORDER)
    return palette(names, ordinal=name in _ORDINAL)


def _scatter(ax, coords: np.ndarray, values: Sequence[object], colors: Mapping[str, Any]) -> None:
    values = pd.Series(list(values), dtype=object)
    unknown = values.isna().to_numpy()
    if unknown.any():
        ax.scatter(*coords[unknown].T, s=8, color=_UNKNOWN_COLOR, linewidths=0)
    names = values[~unknown].astype(str)
    for name in names.value_counts().index:  # largest class first, so minorities stay visible
        mask = (values.astype(str) == name).to_numpy() & ~unknown
        ax.scatter(*coords[mask].T, s=10, color=colors[name], linewidths=0, alpha=0.85)


def _legend(ax, colors: Mapping[str, Any], values: Sequence[object], title: str) -> None:
    """Legend in the palette's reading order (not drawing order), 'unknown' last when present."""
    entries = dict(colors)
    if pd.Series(list(values), dtype=object).isna().any():
        entries["unknown"] = _UNKNOWN_COLOR
    ax.legend(handles=legend_handles(entries), title=title, loc="center left", bbox_to_anchor=(1.02, 0.5),
              frameon=False)


@styled
def plot_tsne(coords: Mapping[str, np.ndarray], labels: pd.DataFrame,
              scores: Mapping[tuple[str, str], Separability], title: str) -> Figure:
    """One row per label column, one column per space; panel titles give the t-SNE separability."""
    names = list(labels.columns)
    fig, axes = plt.subplots(len(names), len(coords), figsize=(2.6 * len(coords) + 1.4, 2.4 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        colors = _palette(name, labels[name])
        for col, (space, xy) in enumerate(coords.items()):
            ax = axes[row, col]
            _scatter(ax, xy, labels[name], colors)
            score = scores.get((name, space))
            detail = "" if score is None or np.isnan(score.silhouette) else (
                f"\nsilhouette {score.silhouette:.2f}, kNN acc {score.knn_accuracy:.2f} "
                f"(chance {score.chance_accuracy:.2f})")
            ax.set_title(f"{space} space: {_TITLES.get(name, name)}{detail}")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel("t-SNE 1"), ax.set_ylabel("t-SNE 2")
        _legend(axes[row, -1], colors, labels[name], _TITLES.get(name, name))
    fig.suptitle(title)
    return fig


@styled
def plot_probability(coords: Mapping[str, np.ndarray], probability: np.ndarray, labels: Sequence[object],
                     stats_by_space: Mapping[str, Mapping[str, Estimate]], title: str) -> Figure:
    """Seed 001 Figure 7c/d: t-SNE dimension 1 against P(malignant), coloured by the true label."""
    fig, axes = plt.subplots(1, len(coords), figsize=(2.8 * len(coords) + 1.4, 2.7), squeeze=False,
                             sharey=True)
    colors = _palette("malignancy", labels)
    for ax, (space, xy) in zip(axes[0], coords.items()):
        _scatter(ax, np.column_stack([xy[:, 0], probability]), labels, colors)
        found = stats_by_space[space]
        ax.set_title(f"{space} space\nPearson r = {_interval(found['pearson_r'])}\n"
                     f"Spearman \u03c1 = {_interval(found['spearman_rho'])}")  # above the data, never over it
        ax.set_xlabel("t-SNE dimension 1")
    axes[0, 0].set_ylabel("zero-shot P(malignant)")
    _legend(axes[0, -1], colors, labels, "malignancy")
    fig.suptitle(title)
    return fig


def _interval(estimate: Estimate) -> str:
    """``"-0.24 [-0.27, -0.21]"``: brackets read unambiguously where the bounds are negative."""
    return f"{estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"


# --- the study -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingResult:
    """Coordinates ``(G, 2)`` per space, labels, P(malignant) ``(G,)`` and both tables."""

    coords: dict[str, np.ndarray]
    labels: pd.DataFrame
    probability: np.ndarray
    separability: pd.DataFrame
    correlation: pd.DataFrame
    tsne_scores: dict[tuple[str, str], Separability]
    correlation_estimates: dict[str, dict[str, Estimate]]


def analyse(spaces: Mapping[str, np.ndarray], labels: pd.DataFrame, probability: np.ndarray,
            config: EmbeddingConfig) -> EmbeddingResult:
    """t-SNE of each space ``(G, F_s)``, separability of each label and the probability correlation."""
    coords = {space: tsne(x, config.seed, config.backend, config.perplexity)
              for space, x in tqdm(spaces.items(), desc="t-SNE", disable=not config.progress, leave=False)}
    records, scores = [], {}
    for name in labels.columns:
        for space, x in spaces.items():
            for representation, data, metric in (("embedding", x, "cosine"), ("t-SNE 2-D", coords[space], "euclidean")):
                score = separability(data, labels[name], metric, config.knn_k, config.n_folds, config.seed)
                if representation != "embedding":
                    scores[(name, space)] = score
                records.append({"label": name, "space": space, "representation": representation, **asdict(score)})
    estimates = {space: correlations(xy[:, 0], probability, config.n_boot, config.seed)
                 for space, xy in coords.items()}
    correlation = pd.DataFrame([
        {"space": space, "n": len(probability),
         **{k: (e.format(3) if e.n_boot else f"{e.value:.2g}") for k, e in estimates[space].items()},
         "R (both dims)": f"{multiple_correlation(xy, probability):.3f}"}
        for space, xy in coords.items()])
    return EmbeddingResult(coords, labels, probability, pd.DataFrame(records).round(3), correlation,
                           scores, estimates)


def embeddings(config: EmbeddingConfig) -> EmbeddingResult:
    """Run ``config``: encode the split, analyse, write figures, tables, coordinates and JSON."""
    prompts = prompt_set_for(load_prompt_sets(config.prompt_file), "malignancy", config.prompt_set)
    split = embed_split(config)
    rows = split.embedded.rows
    pooled = np.stack([split.features[list(r)].mean(dim=0).numpy() for r in rows])
    spaces = {"encoder": pooled, "joint": split.embedded.embeddings.numpy()}
    classifier = ZeroShotClassifier(split.model, prompts.tasks["malignancy"])
    probability = classifier.predict(split.embedded.embeddings, split.embedded.sides, split.embedded.views)[:, 1]
    all_labels = item_labels(split.table, rows)
    labels = all_labels[list(config.labels)]
    result = analyse(spaces, labels, probability, config)

    stem = Path(config.report_dir) / f"{config.level}_{config.split}_{config.backend}_seed{config.seed}"
    where = f"{config.level} level, {config.split} split, {len(rows)} items"
    save_figure(plot_tsne(result.coords, labels, result.tsne_scores,
                          f"t-SNE ({config.backend}, seed {config.seed}), {where}"),
                stem.with_name(stem.name + "_tsne"))
    save_figure(plot_probability(result.coords, probability, all_labels["malignancy"],
                                 result.correlation_estimates, f"t-SNE dimension 1 vs zero-shot malignancy ({prompts.name}), {where}"),
                stem.with_name(stem.name + "_malignancy"))
    write_table(result.separability, stem.with_name(stem.name + "_separability"),
                caption=(f"Separability of labels in the encoder and joint spaces ({where}): silhouette and "
                         f"{config.n_folds}-fold kNN (k={config.knn_k}) accuracy, cosine on embeddings, "
                         f"euclidean on the t-SNE map; chance = majority-class share; checkpoint {split.checkpoint}"),
                label=f"tab:embeddings-separability-{stem.name}")
    write_table(result.correlation, stem.with_name(stem.name + "_correlation"),
                caption=(f"t-SNE dimension 1 vs zero-shot P(malignant) ({where}; {config.n_boot}-sample "
                         "bootstrap 95% CIs); R: multiple correlation with both t-SNE dimensions"),
                label=f"tab:embeddings-correlation-{stem.name}")
    ids = split.table["image_id"].astype(str).tolist()
    frame = pd.DataFrame({"image_ids": [" ".join(ids[i] for i in r) for r in rows]})
    for space, xy in result.coords.items():
        frame[[f"{space}_tsne1", f"{space}_tsne2"]] = xy
    frame = pd.concat([frame, labels, pd.Series(probability, name="p_malignant")], axis=1)
    atomic_write(stem.with_name(stem.name + "_coordinates.csv"),
                 lambda s: s.write(frame.to_csv(index=False).encode("utf-8")))
    save_json(stem.with_suffix(".json"), {
        "config": asdict(config), "checkpoint": split.checkpoint, "prompt_set": prompts.name,
        "items": len(rows), "perplexity": effective_perplexity(config.perplexity, len(rows)),
        "separability": result.separability.to_dict(orient="records"),
        "correlation": result.correlation.to_dict(orient="records"),
    })
    return result


def main(argv: list[str] | None = None) -> EmbeddingResult:
    config = parse_command(
        EmbeddingConfig, argv, "python -m mammo_interp.embeddings",
        "t-SNE of image-encoder vs joint-space embeddings coloured by label, t-SNE dimension 1 vs "
        "zero-shot malignancy probability, and silhouette / kNN separability tables in REPORT_DIR.",
    )
    result = embeddings(config)
    print(result.separability.to_string(index=False))
    print(result.correlation.to_string(index=False))
    return result


if __name__ == "__main__":
    run_main(main)
