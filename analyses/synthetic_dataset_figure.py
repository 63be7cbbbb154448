"""One exam of the default synthetic dataset, 4 views with ground-truth boxes.

``python -m analyses.synthetic_dataset_figure [--data ROOT] [--study STUDY_ID] [--report-dir reports]``
writes ``REPORT_DIR/synthetic_dataset.png`` and ``.pdf`` so a reader can judge realism at a glance. Without ``--study``
it shows the first exam (in table order) with the most distinct finding categories.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from mammo_interp.plotting import (CATEGORY_COLORS, DEFAULT_COLOR, draw_boxes, legend_handles, save_figure, styled,
                                   view_label)
from models.cli import parse_command, run_main
from models.data.default import default_data_root
from models.data.dicom import read_dicom
from models.data.vindr import read_vindr

HANGING = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))  # radiologists' 2x2 hanging


def pick_study(table) -> str:
    categories = table.groupby("study_id", sort=False)["finding_categories"].agg(
        lambda lists: len({c for cats in lists for c in cats}))
    return str(categories.idxmax())


@styled
def plot_exam(table, study_id: str) -> Figure:
    """The exam's four views in the radiologists' hanging, its ground-truth boxes coloured by finding,
    and its synthetic report below."""
    exam = table[table["study_id"] == study_id]
    if exam.empty:
        raise SystemExit(f"study {study_id!r} is not in the dataset")
    fig, axes = plt.subplots(2, 2, figsize=(6.0, 7.4))
    seen = set()
    for ax, (side, view) in zip(axes.ravel(), HANGING):
        ax.axis("off")
        rows = exam[(exam["laterality"] == side) & (exam["view"] == view)]
        if rows.empty:
            ax.set_title(f"{view_label(side, view)}: missing")
            continue
        row = rows.iloc[0]
        ax.imshow(read_dicom(row["path"]).pixels, cmap="gray", vmin=0, vmax=1)
        draw_boxes(ax, row["boxes"], [b.category for b in row["boxes"]], linewidth=1.5)
        seen.update(b.category for b in row["boxes"])
        ax.set_title(f"{view_label(side, view)}: BI-RADS {row['breast_birads']}, density {row['density']}")
    colors = {c: CATEGORY_COLORS.get(c, DEFAULT_COLOR) for c in sorted(seen)}
    if colors:
        fig.legend(handles=legend_handles(colors), loc="outside upper center", ncols=min(3, len(colors)),
                   frameon=False)
    report = exam.iloc[0]["report"]
    caption = f"Synthetic exam {study_id[:8]}…" + (f" Report: {report}" if isinstance(report, str) else "")
    fig.supxlabel(textwrap.fill(caption, 130), fontsize=5.5)  # in the layout: never over the views
    return fig


@dataclass(frozen=True)
class DatasetFigureConfig:
    data: str | None = field(default=None, metadata={
        "help": "VinDr-layout dataset folder; default: the cached synthetic set"})
    study: str | None = field(default=None, metadata={"help": "study_id to show; default: the richest exam"})
    report_dir: str = field(default="reports", metadata={"help": "where synthetic_dataset.png/.pdf go"})


def main(argv: list[str] | None = None) -> int:
    prog = "python -m analyses.synthetic_dataset_figure"
    config = parse_command(DatasetFigureConfig, argv, prog, __doc__.splitlines()[0])
    table = read_vindr(default_data_root(config.data))
    figure = plot_exam(table, config.study or pick_study(table))
    save_figure(figure, Path(config.report_dir) / "synthetic_dataset")
    return 0


if __name__ == "__main__":
    run_main(main)
