"""Rerun the documented, measured commands and diff their tables against the committed ones.

``python -m analyses.reproduce`` runs each check's documented command (each in its own process, its
run folders and reports under ``OUT/CHECK/``, so nothing committed is touched and no mapper or
prediction of an earlier run is reused; the feature and embedding caches are shared) and compares
every table it names, cell by cell, with the committed table the docs quote: the numbers in a
cell must agree to the precision the committed cell shows (one unit in its last digit: a value on a
rounding boundary may round either way; counts exactly), the rest of the cell must read the same.
Writes ``OUT/reproduce.{md,csv,tex}`` (one row per table: same, or how many cells differ and the
first of them) and exits 1 when any table differs or a command fails. The default checks take ~10
minutes on 2 CPU cores once the embedded set and its features are cached; ``--all`` adds the
hour-long studies. Timings (bench, box_speed) are not checks: they measure the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from models.cli import parse_command, run_command, run_main
from models.errors import check_choice
from models.report_tables import write_table
from models.run_options import progress_field

NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e[-+]?\d+)?")


@dataclass(frozen=True)
class Check:
    """A documented command and the committed tables (relative to ``committed``) it must reproduce."""

    name: str
    module: str
    args: tuple[str, ...]
    committed: str
    tables: tuple[str, ...]
    slow: bool = False
    has_out: bool = True  # takes --out (its run folders go under OUT/CHECK/runs)
    has_progress: bool = True  # takes --no-progress

    def command(self, out: Path) -> list[str]:
        runs = ["--out", str(out / self.name / "runs")] if self.has_out else []
        quiet = ["--no-progress"] if self.has_progress else []
        return ["python", "-m", self.module, *self.args, *runs, "--report-dir", str(out / self.name), *quiet]


CHECKS = (
    Check("zeroshot", "mammo_interp.zeroshot", ("--task", "mass"), "reports/zeroshot",
          ("mass_image_test_mmg_clip.csv",), has_out=False),
    Check("report_generation", "mammo_interp.report", (), "reports/report_generation",
          ("breast_test_t0p6_fields.csv", "breast_test_t0p6_coverage.csv"), has_out=False),
    Check("embeddings", "mammo_interp.embeddings", (), "reports/embeddings",
          ("image_test_opentsne_seed0_correlation.csv", "image_test_opentsne_seed0_separability.csv"),
          has_out=False),
    Check("prompt_ablation", "analyses.prompt_ablation", (), "reports/prompt_ablation", ("prompt_ablation.csv",),
          has_out=False),
    Check("factor_mass", "mammo_interp.factor", ("--attribute", "mass"), "reports/localization", ("mass_head.csv",)),
    # the README's results table: rebuilt from the committed variant and check tables (the --all checks
    # below rerun those)
    Check("localization_summary", "analyses.localization_summary", (), "reports/localization", ("summary.csv",),
          has_out=False, has_progress=False),
    Check("per_view", "analyses.per_view_saliency", ("--methods", "gradcam", "layercam"), "reports/per_view",
          ("mass_view_identification.csv", "mass_localization.csv", "suspicious_calcification_view_identification.csv"),
          slow=True, has_out=False),
    Check("factor_calcification", "mammo_interp.factor", ("--attribute", "suspicious calcification"),
          "reports/localization", ("suspicious_calcification_head.csv",), slow=True),
    Check("factor_variants_mass", "analyses.factor_variants", ("--attribute", "mass"), "reports/localization/variants",
          ("mass_head.csv", "mass_blocks4.csv"), slow=True),
    Check("method_checks_mass", "analyses.method_checks", ("--attribute", "mass"), "reports/localization/checks",
          ("mass_head.csv", "mass_blocks4.csv"), slow=True),
)


@dataclass(frozen=True)
class ReproduceConfig:
    only: tuple[str, ...] = field(default=(), metadata={
        "help": f"run only these checks: {', '.join(c.name for c in CHECKS)}; default: every quick one"})
    all: bool = field(default=False, metadata={
        "help": f"also the hour-long checks ({', '.join(c.name for c in CHECKS if c.slow)})"})
    out: str = field(default="runs/reproduce", metadata={
        "help": "each check's run folders and tables, and the verdict reproduce.{md,csv,tex}"})
    progress: bool = progress_field("the checks")

    def __post_init__(self) -> None:
        check_choice("--only", list(self.only), [c.name for c in CHECKS])


def cell_difference(committed: object, rerun: object) -> str | None:
    """Why two table cells differ (None when they agree): the decimals in ``committed`` may move by one
    unit in their last shown digit, integers (counts) not at all, and the text around them must read
    the same."""
    old, new = str(committed), str(rerun)
    if NUMBER.sub("#", old) != NUMBER.sub("#", new):
        return f"{old!r} became {new!r}"
    for before, after in zip(NUMBER.finditer(old), NUMBER.finditer(new)):
        decimals = len(before.group(1) or "")
        allowed = 1.01 * 10.0 ** -decimals if decimals else 0.0  # counts must match exactly
        if abs(float(before.group(0)) - float(after.group(0))) > allowed:
            return f"{old!r} became {new!r}"
    return None


def compare_tables(committed: pd.DataFrame, rerun: pd.DataFrame) -> tuple[int, str]:
    """How many cells differ and the first one (``(0, "")`` when the tables agree)."""
    if list(committed.columns) != list(rerun.columns) or committed.shape != rerun.shape:
        return -1, f"shape {committed.shape} {list(committed.columns)} became {rerun.shape} {list(rerun.columns)}"
    differences = [(row, column, why) for row in range(len(committed)) for column in committed.columns
                   if (why := cell_difference(committed[column].iloc[row], rerun[column].iloc[row])) is not None]
    if not differences:
        return 0, ""
    row, column, why = differences[0]
    return len(differences), f"row {row + 1}, {column}: {why}"


def run_check(check: Check, out: Path) -> list[dict[str, object]]:
    """One row per table of ``check``: committed file, verdict, cells that differ, first difference."""
    failure = run_command(check.command(out))
    rows = []
    for table in check.tables:
        committed = Path(check.committed) / table
        row: dict[str, object] = {"check": check.name, "table": str(committed)}
        if failure is not None:
            rows.append({**row, "verdict": "command failed", "cells differing": "", "first difference": failure})
            continue
        count, first = compare_tables(pd.read_csv(committed, keep_default_na=False),
                                      pd.read_csv(out / check.name / table, keep_default_na=False))
        verdict = "same" if count == 0 else "differs"
        rows.append({**row, "verdict": verdict, "cells differing": "all" if count < 0 else count,
                     "first difference": first})
    return rows


def main(argv: list[str] | None = None) -> int:
    prog = "python -m analyses.reproduce"
    config = parse_command(ReproduceConfig, argv, prog, __doc__.splitlines()[0])
    chosen = [c for c in CHECKS if (c.name in config.only if config.only else config.all or not c.slow)]
    out = Path(config.out)
    rows = [row for check in tqdm(chosen, desc="reproduce", unit="check", disable=not config.progress)
            for row in run_check(check, out)]
    frame = pd.DataFrame(rows)
    write_table(frame, out / "reproduce", caption="Documented commands rerun: their tables against the committed ones",
                label="tab:reproduce")
    print(frame.to_string(index=False))
    return 0 if (frame["verdict"] == "same").all() else 1


if __name__ == "__main__":
    run_main(main)
