"""How lesion conspicuity limits what any model can learn: the supervised reference per difficulty.

``python -m analyses.difficulty_sweep --difficulties 0.0 0.25 0.5 0.75`` generates one synthetic set per
difficulty (same size, seeds ``SEED + k``; cached like the default set), trains the supervised
reference on each (:mod:`models.reference`; a finished run is reused, an interrupted one resumes)
and writes ``REPORT_DIR/difficulty_sweep.{md,csv,tex}`` (best validation AUROC, test AUROC with
bootstrap CIs, per finding) and ``difficulty_sweep.{png,pdf}``.

The default set's difficulty is chosen from this sweep by one rule, on the validation split: the
hardest difficulty at which the reference's validation mass AUROC reaches ``--target``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from mammo_interp.plotting import QUALITATIVE, save_figure, styled
from models.cli import parse_command, run_main
from models.data.default import default_data_root
from models.data.synth import SynthConfig
from models.io import save_json
from models.metrics import Estimate
from models.reference import ReferenceConfig, evaluate_reference, selection_column, train_reference
from models.report_tables import write_table
from models.run_record import portable


@dataclass(frozen=True)
class DifficultySweepConfig:
    difficulties: tuple[float, ...] = field(default=(0.0, 0.25, 0.5, 0.75), metadata={
        "help": "generator difficulties; set k gets seed SEED + k, so keep the order to reuse sets"})
    n_studies: int = field(default=2400, metadata={"help": "studies per synthetic set"})
    seed: int = field(default=100, metadata={"help": "generator seed of the first set (then +1, +2...)"})
    target: float = field(default=0.95, metadata={"help": "validation mass AUROC a learnable setting reaches"})
    reference: ReferenceConfig = field(default_factory=ReferenceConfig, metadata={
        "help": "supervised-reference training (its data/out/report_dir are set per difficulty)"})
    out: str = field(default="runs/difficulty_sweep", metadata={"help": "run folders, one per difficulty"})
    report_dir: str = field(default="reports/reference", metadata={"help": "where the table and figure go"})
    replot: str | None = field(default=None, metadata={
        "help": "only redraw the figure of an earlier sweep from its table (e.g. "
                "reports/reference/difficulty_sweep.csv) into REPORT_DIR: no data, no training"})

    def __post_init__(self) -> None:
        if not self.difficulties or any(not 0 <= d <= 1 for d in self.difficulties):
            raise ValueError(f"difficulties must be in [0, 1], got {list(self.difficulties)}")


def synthetic_set(config: DifficultySweepConfig, index: int) -> SynthConfig:
    return SynthConfig(n_studies=config.n_studies, seed=config.seed + index,
                       difficulty=config.difficulties[index])


def run_point(config: DifficultySweepConfig, index: int) -> dict[str, object]:
    """Train (or reuse) the reference at one difficulty; its validation and test AUROCs."""
    difficulty = config.difficulties[index]
    root = default_data_root(None, synthetic_set(config, index), progress=config.reference.progress)
    out = Path(config.out) / f"difficulty_{difficulty:g}"
    reference = dataclasses.replace(config.reference, data=str(root), out=str(out), resume=True,
                                    report_dir=str(out / "reports"))
    best = train_reference(reference)
    history = pd.read_csv(out / "metrics.csv")
    column = selection_column(reference)
    scored = history.dropna(subset=[column])
    best_row = scored.loc[scored[column].idxmax()] if len(scored) else history.iloc[0]
    test = evaluate_reference(best, reference)
    return {"difficulty": difficulty, "epochs": len(history), "best_epoch": int(best_row["epoch"]) + 1,
            **{f"val {f} AUROC": float(best_row[f"val_auroc_{f}"]) for f in reference.findings},
            **{f"test {name}": estimate for name, estimate in test.items()}}


def _cell(value: object) -> object:
    """Table text: estimates as ``value (low–high)``, other floats to 3 decimals."""
    if isinstance(value, Estimate):
        return value.format()
    return round(value, 3) if isinstance(value, float) else value


def chosen_difficulty(rows: list[dict[str, object]], target: float) -> float | None:
    """The hardest difficulty whose best validation mass AUROC reaches ``target`` (None if none)."""
    reached = [float(r["difficulty"]) for r in rows if float(r.get("val Mass AUROC", 0.0)) >= target]
    return max(reached) if reached else None


@styled
def plot_sweep(rows: list[dict[str, object]], findings: tuple[str, ...], target: float) -> Figure:
    """Test AUROC (95 % CI) per finding against generator difficulty, with the target and chance."""
    fig, ax = plt.subplots(figsize=(3.5, 3.0))
    x = [float(r["difficulty"]) for r in rows]
    handles = []
    for finding, marker, color in zip(findings, "os^v", QUALITATIVE):
        estimates: list[Estimate] = [r[f"test {finding} AUROC"] for r in rows]
        values = [e.value for e in estimates]
        errors = [[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]]
        handles.append(ax.errorbar(x, values, yerr=errors, marker=marker, color=color, capsize=3,
                                   label=finding.lower()))
    handles.append(ax.axhline(target, color="0.5", linestyle="--", linewidth=1, label=f"target {target:g}"))
    handles.append(ax.axhline(0.5, color="0.75", linestyle=":", linewidth=1, label="chance"))
    ax.set(xlabel="generator difficulty (0 easy, 1 hard)", ylabel="test AUROC (95% CI)", ylim=(0.4, 1.01))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)  # findings first; never over the data
    return fig


def sweep(config: DifficultySweepConfig) -> pd.DataFrame:
    rows = sorted((run_point(config, k) for k in range(len(config.difficulties))),
                  key=lambda row: float(row["difficulty"]))
    findings = config.reference.findings
    frame = pd.DataFrame([{k: _cell(v) for k, v in r.items()} for r in rows])
    stem = Path(config.report_dir) / "difficulty_sweep"
    chosen = chosen_difficulty(rows, config.target)
    write_table(frame, stem, caption=(
        f"Supervised reference ({config.reference.pooling} pooling on {config.reference.feature_layer}, "
        f"{config.reference.image_size[0]}x{config.reference.image_size[1]}, {config.n_studies} studies per "
        f"difficulty): best validation AUROC and test AUROC (95% bootstrap CI). Hardest difficulty with "
        f"validation mass AUROC >= {config.target:g}: {chosen if chosen is not None else 'none'}"),
        label="tab:difficulty-sweep")
    save_figure(plot_sweep(rows, findings, config.target), stem)
    save_json(stem.with_suffix(".json"), {"config": portable(dataclasses.asdict(config)), "chosen_difficulty": chosen,
                                          "rows": frame.to_dict(orient="records")})
    return frame


def replot(config: DifficultySweepConfig) -> pd.DataFrame:
    """The figure of an earlier sweep, redrawn from its table (``test FINDING AUROC`` cells)."""
    try:
        frame = pd.read_csv(config.replot)
    except FileNotFoundError:
        raise SystemExit(f"--replot: no such table {config.replot} (a difficulty_sweep.csv the sweep wrote)") from None
    findings = tuple(c[len("test "):-len(" AUROC")] for c in frame.columns if c.startswith("test ") and c.endswith(" AUROC"))
    rows = [{**row, **{f"test {f} AUROC": Estimate.parse(row[f"test {f} AUROC"]) for f in findings}}
            for row in frame.to_dict(orient="records")]
    save_figure(plot_sweep(rows, findings, config.target), Path(config.report_dir) / "difficulty_sweep")
    return frame


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(DifficultySweepConfig, argv, "python -m analyses.difficulty_sweep",
                          "Train the supervised reference at several generator difficulties; table + figure.")
    frame = replot(config) if config.replot is not None else sweep(config)
    print(frame.to_string(index=False))
    return frame


if __name__ == "__main__":
    run_main(main)
