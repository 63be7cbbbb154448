"""Prompt ablation for zero-shot classification: ``python -m analyses.prompt_ablation``.

Same images, same model; one row per task x prompt set x ensembling (embedding / score) x logit
scale (learned / none), the MMG-CLIP Table 8 comparison (CXR-CLIP labels vs sentences) extended to
ensembling and temperature. Images are encoded once; only the text side changes between rows. With
one prompt per class and one side/view the two ensembles coincide; without the logit scale a binary
task keeps its AUROC, F1 and balanced accuracy (the ranking and the 0.5 threshold do not move) and
only calibration (ECE) shows the difference. Writes ``REPORT_DIR/prompt_ablation`` (md, CSV,
LaTeX), ``prompt_ablation_long.csv`` (floats) and ``prompt_ablation.png/.pdf`` (AUROC and ECE bars
with 95 % CI error bars).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import models  # noqa: F401 - runtime guard before torch/timm/transformers
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from mammo_interp.calibration import DEFAULT_BINS
from mammo_interp.plotting import plt, save_figure, styled
from mammo_interp.prompts import load_prompt_sets
from mammo_interp.zero_shot_classifier import ENSEMBLE_NAMES, ENSEMBLES
from mammo_interp.zeroshot import SplitConfig, embed_split, run_zero_shot
from models.cli import parse_command, run_main
from models.io import atomic_write, save_json
from models.metrics import Estimate
from models.report_tables import ci_frame, ci_long_frame, write_table
from models.text import ZERO_SHOT_TASKS

ABLATION_TASKS = ("mass", "calcification", "malignancy", "mass_shape", "mass_margin")
KEYS = ("task", "prompt set", "ensemble", "logit scale")
METRIC_ORDER = ("auroc", "auroc_std", "macro_f1", "balanced_accuracy", "ece")


@dataclass(frozen=True)
class PromptAblationConfig(SplitConfig):
    """The prompt ablation study."""

    tasks: tuple[str, ...] = field(default=ABLATION_TASKS, metadata={"help": "zero-shot tasks"})
    prompt_sets: tuple[str, ...] = field(default=(), metadata={
        "help": "prompt sets to compare; default: every set of the prompt file"})
    prompt_file: str | None = field(default=None, metadata={
        "help": "prompt-set JSON; default: the packaged sets"})
    n_bins: int = field(default=DEFAULT_BINS, metadata={"help": "equal-width calibration bins"})
    report_dir: str = field(default="reports/prompt_ablation", metadata={"help": "where outputs go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [t for t in self.tasks if t not in ZERO_SHOT_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks {list(self.tasks)}: each must be one of {ZERO_SHOT_TASKS}")


def prompt_ablation(config: PromptAblationConfig) -> pd.DataFrame:
    """Run every (task, set, ensemble, scale) row; writes and returns the table."""
    sets = load_prompt_sets(config.prompt_file)
    names = list(config.prompt_sets or sets)
    missing = [n for n in names if n not in sets]
    if missing:
        raise KeyError(f"unknown prompt sets {missing}; available: {list(sets)}")
    split = embed_split(config)
    model, table, embedded, checkpoint = split.model, split.table, split.embedded, split.checkpoint
    runs = [(task, name, ensemble, scale) for task in config.tasks for name in names
            if task in sets[name].tasks for ensemble in ENSEMBLES for scale in (True, False)]
    results: dict[str, dict[str, Estimate]] = {}
    keys: list[dict[str, str]] = []
    logit_scale = model.logit_scale().item()
    for task, name, ensemble, scale in tqdm(runs, desc="ablation", disable=not config.progress):
        run = run_zero_shot(model, table, embedded, sets[name].tasks[task], ensemble, scale,
                            config.n_boot, config.seed, config.n_bins)
        keys.append({"task": task, "prompt set": name, "ensemble": ensemble,
                     "logit scale": f"{logit_scale:.3g}" if scale else "none"})
        results[str(len(keys))] = run.metrics
    frame = _keyed(ci_frame(results, row_label="run"), keys)
    long = _keyed(ci_long_frame(results, row_label="run"), keys)
    out = Path(config.report_dir)
    caption = (f"Zero-shot prompt ablation, {config.level} level, {config.split} split, same images and "
               f"model (learned logit scale {logit_scale:.3g}); 95% bootstrap CIs ({config.n_boot} "
               f"samples); ECE over {config.n_bins} bins; checkpoint {checkpoint} at "
               f"{split.image_size[0]}x{split.image_size[1]}")
    write_table(frame, out / "prompt_ablation", caption=caption, label="tab:prompt-ablation")
    atomic_write(out / "prompt_ablation_long.csv",
                 lambda stream: stream.write(long.to_csv(index=False).encode("utf-8")))
    save_figure(plot_ablation(long), out / "prompt_ablation")
    save_json(out / "prompt_ablation.json", {"config": asdict(config), "checkpoint": checkpoint,
                                             "logit_scale": logit_scale, "items": len(embedded.rows)})
    return frame


def _keyed(frame: pd.DataFrame, keys: list[dict[str, str]]) -> pd.DataFrame:
    """Replace the ``run`` number column by the run's key columns; metric columns in
    :data:`METRIC_ORDER` (binary rows, which have no ``auroc_std``, may come first)."""
    index = frame["run"].astype(int) - 1
    keyed = pd.DataFrame([keys[i] for i in index], columns=list(KEYS))
    values = frame.drop(columns="run").reset_index(drop=True)
    values = values[sorted(values.columns, key=lambda c: METRIC_ORDER.index(c) if c in METRIC_ORDER else len(METRIC_ORDER))]
    return pd.concat([keyed, values], axis=1)


@styled
def plot_ablation(long: pd.DataFrame, metrics: tuple[str, ...] = ("auroc", "ece")) -> Figure:
    """Bars of each metric (rows) per task (columns): prompt sets on x, one bar per ensemble x
    logit-scale setting, 95 % CI error bars (``long`` from :func:`prompt_ablation`)."""
    tasks = list(dict.fromkeys(long["task"]))
    settings = list(dict.fromkeys(zip(long["ensemble"], long["logit scale"])))
    colors = sns.color_palette("colorblind", len(settings))
    fig, axes = plt.subplots(len(metrics), len(tasks), figsize=(2.4 * len(tasks) + 0.6, 2.3 * len(metrics)),
                             squeeze=False, sharey="row")
    width = 0.8 / len(settings)
    for row, metric in enumerate(metrics):
        for col, task in enumerate(tasks):
            ax = axes[row, col]
            part = long[(long["task"] == task) & (long["metric"] == metric)]
            sets = list(dict.fromkeys(part["prompt set"]))
            for k, (ensemble, scale) in enumerate(settings):
                cells = part[(part["ensemble"] == ensemble) & (part["logit scale"] == scale)]
                cells = cells.set_index("prompt set").reindex(sets)
                x = np.arange(len(sets)) + (k - (len(settings) - 1) / 2) * width
                errors = np.vstack([cells["value"] - cells["low"], cells["high"] - cells["value"]])
                ax.bar(x, cells["value"], width, yerr=np.nan_to_num(errors.clip(min=0)), capsize=1.5,
                       color=colors[k], error_kw={"elinewidth": 0.7},
                       label=f"{ENSEMBLE_NAMES[ensemble]}, " + ("no logit scale" if scale == "none" else f"logit scale {scale}"))
            if metric == "auroc":
                ax.axhline(0.5, color="0.5", lw=0.7, ls="--")
            ax.set_xticks(np.arange(len(sets)), sets, rotation=35, ha="right")
            if row == 0:
                ax.set_title(task.replace("_", " "))
            if col == 0:
                ax.set_ylabel(metric.upper() if metric in ("auroc", "ece") else metric)
            if row < len(metrics) - 1:
                ax.tick_params(axis="x", labelbottom=False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(settings), frameon=False)
    return fig


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(
        PromptAblationConfig, argv, "python -m analyses.prompt_ablation",
        "Zero-shot prompt ablation: prompt set x ensembling x logit scale on the same images and "
        "model; writes tables and a bar chart to REPORT_DIR.",
    )
    table = prompt_ablation(config)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    run_main(main)
