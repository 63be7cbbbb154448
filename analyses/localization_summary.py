"""One table of every localization method: boxes, faithfulness and the randomization check.

``python -m analyses.localization_summary`` joins, for every attribute and layer that has both,
the tables of ``analyses.factor_variants`` (each method with its setting chosen on validation:
IoU-hit@0.25, AP@0.25, pointing game on the test split) and of ``analyses.method_checks``
(insertion - deletion AUC and the randomization verdict), matched by method name (published FActOR
is ``FActOR top-k`` in the checks), and the cost of each method's boxes in bare forwards from
``analyses.box_speed`` (every FActOR variant costs what FActOR top-k costs; the cost does not depend
on the attribute). A method measured by only some of them keeps blanks in the others' columns.
Writes ``REPORT_DIR/summary.{md,csv,tex}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analyses.factor_variants import PUBLISHED
from mammo_interp.methods.channels import FACTOR
from models.cli import parse_command, run_main
from models.errors import InputError
from models.report_tables import write_table

LOCALIZATION_COLUMNS = ("IoU-hit@0.25", "AP@0.25", "pointing game")
CHECK_COLUMNS = ("insertion - deletion", "randomization check")
CHECKS_NAME_OF = {PUBLISHED: FACTOR.label}
SPEED_COLUMN = "boxes / bare forward"
COST_COLUMN = "boxes, bare forwards"


@dataclass(frozen=True)
class LocalizationSummaryConfig:
    """Where the two analyses wrote their tables, and where the summary goes."""

    variants_dir: str = field(default="reports/localization/variants", metadata={
        "help": "tables of python -m analyses.factor_variants"})
    checks_dir: str = field(default="reports/localization/checks", metadata={
        "help": "tables of python -m analyses.method_checks"})
    speed_table: str = field(default="reports/localization/speed_cpu.csv", metadata={
        "help": "table of python -m analyses.box_speed; absent: no cost column"})
    report_dir: str = field(default="reports/localization", metadata={"help": "where summary.* goes"})


def cost_name(method: str) -> str:
    """The row of ``analyses.box_speed`` that times ``method`` (every FActOR variant: FActOR top-k)."""
    return FACTOR.label if method.startswith("FActOR") else method


def study_rows(variants: pd.DataFrame, checks: pd.DataFrame, costs: dict[str, str] | None = None) -> pd.DataFrame:
    """The methods of one (attribute, layer): variants' order first, then methods only the checks
    have; ``costs``: that layer's method name -> boxes in bare forwards."""
    checks, costs = checks.set_index("method"), costs or {}
    rows = []
    for _, row in variants.iterrows():
        name = CHECKS_NAME_OF.get(row["method"], row["method"])
        checked = checks.loc[name] if name in checks.index else None
        rows.append({"method": row["method"], **{c: row[c] for c in LOCALIZATION_COLUMNS},
                     **{c: "" if checked is None else checked[c] for c in CHECK_COLUMNS}})
    covered = {CHECKS_NAME_OF.get(m, m) for m in variants["method"]}
    rows += [{"method": name, **{c: "" for c in LOCALIZATION_COLUMNS}, **{c: checks.loc[name, c] for c in CHECK_COLUMNS}}
             for name in checks.index if name not in covered]
    return pd.DataFrame(rows).assign(**{COST_COLUMN: lambda t: [costs.get(cost_name(m), "") for m in t["method"]]})


def read_cells(path: Path) -> pd.DataFrame:
    """A table as the text of its cells (formatted values with their CIs stay as written)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def summarize(config: LocalizationSummaryConfig) -> pd.DataFrame:
    """Every (attribute, layer) with both tables, stacked."""
    speed = Path(config.speed_table)
    speed = read_cells(speed) if speed.is_file() else pd.DataFrame(columns=["layer", "method", SPEED_COLUMN])
    frames = []
    for path in sorted(Path(config.checks_dir).glob("*.csv")):
        if path.stem.endswith("_long"):
            continue
        variants = Path(config.variants_dir) / path.name
        if not variants.is_file():
            continue
        attribute, _, layer = path.stem.rpartition("_")
        layer = layer.replace("blocks", "blocks.")
        costs = dict(zip(speed.loc[speed["layer"] == layer, "method"], speed.loc[speed["layer"] == layer, SPEED_COLUMN]))
        frames.append(study_rows(read_cells(variants), read_cells(path), costs)
                      .assign(attribute=attribute.replace("_", " "), layer=layer))
    if not frames:
        raise InputError(f"no (attribute, layer) has tables in both {config.variants_dir} and {config.checks_dir}; "
                         "run python -m analyses.factor_variants and python -m analyses.method_checks first")
    table = pd.concat(frames, ignore_index=True)
    return table[["attribute", "layer", "method", *LOCALIZATION_COLUMNS, *CHECK_COLUMNS, COST_COLUMN]]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    prog = "python -m analyses.localization_summary"
    config = parse_command(LocalizationSummaryConfig, argv, prog,
                          "One table per method of box localization (settings chosen on validation), "
                          "faithfulness and the model-randomization check, from the tables of "
                          "analyses.factor_variants and analyses.method_checks.")
    table = summarize(config)
    caption = ("Localization methods on the test split: IoU-hit@0.25, AP@0.25 and pointing game with each method's "
               "setting chosen on validation (95% bootstrap CIs over images); insertion minus deletion AUC of the "
               "CLIP cosine to the attribute, and the model-randomization check, on the first test images with "
               "the finding; the cost of each method's boxes from raw images in bare backbone forwards "
               "(analyses.box_speed, CPU)")
    write_table(table, Path(config.report_dir) / "summary", caption, "tab:localization-summary")
    return table


if __name__ == "__main__":
    run_main(main)
