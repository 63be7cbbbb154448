"""How close a VinDr-layout folder is to real VinDr-Mammo: prevalences, sizes, quirks, side by side.

``python -m analyses.data_statistics [--data ROOT]`` measures the folder (default: the embedded
synthetic set) from its raw annotation CSVs and writes ``REPORT_DIR/vindr_vs_data.{md,csv,tex}``
beside the published statistics of VinDr-Mammo v1.0 (20,000 images, 20,486 finding rows). The real
figures are facts about the public dataset, kept here as numbers; no real data is shipped.

Box size is ``sqrt(box area) / image height`` (10th / 50th / 90th percentile per category);
prevalences are shares of images (or of studies, where said).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import numpy as np
import pandas as pd

from models.cli import parse_command, run_main
from models.data import schema
from models.data.default import default_data_root
from models.data.vindr import parse_categories
from models.report_tables import write_table

MAIN_CATEGORIES = ("Mass", "Suspicious Calcification", "Architectural Distortion", "Focal Asymmetry", "Asymmetry")
RARE_CATEGORIES = tuple(c for c in schema.FINDING_CATEGORIES if c not in MAIN_CATEGORIES)

# Published statistics of VinDr-Mammo v1.0 (percent of images unless said; sizes as sqrt(area)/height).
VINDR = {
    **{f"{c} (% images)": v for c, v in zip(MAIN_CATEGORIES, ("5.6", "2.2", "0.6", "1.3", "0.5"))},
    "each rare category (% images)": "0.09-0.28",
    "any box (% images)": "8.8",
    "any box (% studies)": "18.5",
    "boxes per image with a box (mean / max)": "1.27 / 7",
    "density A / B / C / D (% images)": "0.5 / 9.5 / 76.5 / 13.5",
    "BI-RADS 1 / 2 / 3 / 4 / 5 (% images)": "67.0 / 23.4 / 4.7 / 3.8 / 1.1",
    **{f"{c} size p10 / p50 / p90": v for c, v in zip(MAIN_CATEGORIES, (
        ".034 / .068 / .131", ".017 / .057 / .175", ".034 / .057 / .125", ".051 / .099 / .188",
        ".035 / .062 / .149"))},
    "rows naming several categories": "yes",
    "boxes past the image edge by > 1 px": "36 (1.6 %)",  # of about 2,250 boxes
    "boxes without a finding BI-RADS": "136",
}


@dataclass(frozen=True)
class DataStatisticsConfig:
    data: str | None = field(default=None, metadata={"help": "VinDr-layout folder; default: the synthetic set"})
    report_dir: str = field(default="reports/data", metadata={"help": "where the table goes"})


def _percent(share: float) -> str:
    return f"{100 * share:.1f}"


def _join(values) -> str:
    return " / ".join(values)


def measure(root: Path) -> dict[str, str]:
    """The statistics of :data:`VINDR`, measured on the raw CSVs under ``root``."""
    images = pd.read_csv(root / schema.BREAST_LEVEL_CSV, dtype=str)
    rows = pd.read_csv(root / schema.FINDING_CSV, dtype=str, keep_default_na=False)
    rows["categories"] = rows["finding_categories"].map(parse_categories)
    boxed = rows[rows["xmin"] != ""].merge(images[["image_id", "height", "width"]], on="image_id",
                                          suffixes=("_row", ""))
    xyxy = boxed[list(schema.BOX_COLUMNS)].astype(float).to_numpy()
    height, width = boxed["height"].astype(float).to_numpy(), boxed["width"].astype(float).to_numpy()
    overshoot = np.maximum.reduce([-xyxy[:, 0], -xyxy[:, 1], xyxy[:, 2] - width, xyxy[:, 3] - height])
    size = np.sqrt((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])) / height
    named = rows[["image_id", "categories"]].explode("categories")
    has = {c: named.loc[named["categories"] == c, "image_id"].nunique() / len(images)
           for c in schema.FINDING_CATEGORIES}
    box_counts = boxed.groupby("image_id").size()
    studies_with_box = images.loc[images["image_id"].isin(box_counts.index), "study_id"].nunique()
    density = images["breast_density"].value_counts(normalize=True)
    birads = images["breast_birads"].value_counts(normalize=True)
    stats = {f"{c} (% images)": _percent(has[c]) for c in MAIN_CATEGORIES}
    rare = [has[c] for c in RARE_CATEGORIES]
    stats["each rare category (% images)"] = f"{_percent(min(rare))}-{_percent(max(rare))}"
    stats["any box (% images)"] = _percent(len(box_counts) / len(images))
    stats["any box (% studies)"] = _percent(studies_with_box / images["study_id"].nunique())
    stats["boxes per image with a box (mean / max)"] = (
        f"{box_counts.mean():.2f} / {box_counts.max()}" if len(box_counts) else "n/a")
    stats["density A / B / C / D (% images)"] = _join(_percent(density.get(f"DENSITY {d}", 0.0)) for d in "ABCD")
    stats["BI-RADS 1 / 2 / 3 / 4 / 5 (% images)"] = _join(_percent(birads.get(f"BI-RADS {b}", 0.0)) for b in range(1, 6))
    for category in MAIN_CATEGORIES:
        sizes = size[boxed["categories"].map(lambda cats, c=category: c in cats).to_numpy()]
        stats[f"{category} size p10 / p50 / p90"] = (
            _join(f"{q:.3f}".lstrip("0") for q in np.percentile(sizes, (10, 50, 90))) if len(sizes) else "n/a")
    stats["rows naming several categories"] = str(int((rows["categories"].map(len) > 1).sum()))
    past = int((overshoot > 1.0).sum())
    stats["boxes past the image edge by > 1 px"] = f"{past} ({100 * past / max(len(boxed), 1):.2f} %)"
    stats["boxes without a finding BI-RADS"] = str(int((boxed["finding_birads"] == "").sum()))
    return stats


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(DataStatisticsConfig, argv, "python -m analyses.data_statistics",
                          "Compare a VinDr-layout folder's annotation statistics with real VinDr-Mammo v1.0.")
    root = default_data_root(config.data)
    measured = measure(root)
    table = pd.DataFrame({"statistic": list(VINDR), "VinDr-Mammo v1.0": list(VINDR.values()),
                          root.name: [measured[k] for k in VINDR]})
    written = write_table(table, Path(config.report_dir) / "vindr_vs_data",
                          caption=f"Annotation statistics: VinDr-Mammo v1.0 (published) vs {root.name}",
                          label="tab:vindr-vs-data")
    print(next(p for p in written if p.suffix == ".md").read_text())
    return table


if __name__ == "__main__":
    run_main(main)
