"""Which training choices make the CLIP model learn the findings: a recipe ablation.

``python -m analyses.recipe_ablation --data ROOT [--only NAME ...]`` pretrains one model per variant of
a recipe file (JSON, default ``analyses/recipes/clip_ablation.json``: a ``base`` set of
:class:`models.pretrain.PretrainConfig` values and ``variants``, each a name and the values it
changes, nested sections allowed), each into ``OUT/<name>`` with ``--resume``, so an interrupted
ablation continues where it stopped. After each variant it rewrites
``REPORT_DIR/clip_ablation.{md,csv,tex,json}`` and keeps each finished variant's per-epoch metrics in
``REPORT_DIR/runs/<name>.csv`` (committed; a variant measured in an earlier session stays in the table
after its run folder is gone): per variant, at the epoch pretraining keeps (lowest validation loss), the validation zero-shot AUROCs for mass, suspicious calcification and density, and
R@1. ``--reference RUN`` adds the supervised reference's best validation AUROCs as the ceiling row.
Validation only: the test split is not read.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import models  # noqa: F401  (runtime set-up first)
import pandas as pd

from models.cli import config_from_values, parse_command, run_main
from models.data.default import uses_embedded

from models.errors import InputError
from models.io import save_json
from models.pretrain import PretrainConfig, pretrain
from models.reference import shipped_reference, shipped_reference_card
from models.report_tables import write_table
from models.run_options import device_field, precision_field, progress_field, threads_field

DEFAULT_RECIPES = "clip_ablation.json"
COLUMNS = {"val_zeroshot_mass": "val mass AUROC", "val_zeroshot_calcification": "val calcification AUROC",
           "val_zeroshot_density": "val density macro-AUROC", "val_r1": "val R@1"}
REFERENCE_COLUMNS = {"val_auroc_Mass": "val mass AUROC",
                     "val_auroc_Suspicious Calcification": "val calcification AUROC"}


@dataclass(frozen=True)
class RecipeAblationConfig:
    data: str | None = field(default=None, metadata={"help": "dataset folder; default: the synthetic set"})
    recipes: str | None = field(default=None, metadata={
        "help": f"recipe file (JSON); default: the packaged analyses/recipes/{DEFAULT_RECIPES}"})
    only: tuple[str, ...] = field(default=(), metadata={"help": "run just these variants (default: all)"})
    reference: str | None = field(default=None, metadata={
        "help": "a models.reference run folder: its best validation AUROCs become the ceiling row; "
                "default: the shipped reference's card on the embedded set"})
    out: str = field(default="runs/recipe_ablation", metadata={"help": "run folders, one per variant"})
    report_dir: str = field(default="reports/recipe", metadata={"help": "where the table goes"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    progress: bool = progress_field()


def read_recipes(path: str | None) -> dict[str, Any]:
    """The recipe file: ``{"base": {...}, "variants": [{"name": ..., "changes": {...}}, ...]}``."""
    source = Path(path) if path else resources.files("analyses") / "recipes" / DEFAULT_RECIPES
    try:
        recipes = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"--recipes {source}: cannot read JSON ({exc})") from None
    names = [variant.get("name") for variant in recipes.get("variants", [])]
    if not isinstance(recipes.get("base"), dict) or not names or None in names or len(set(names)) < len(names):
        raise InputError(f"--recipes {source}: expected a 'base' object and 'variants' with distinct names")
    return recipes


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, nested sections merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def variant_config(config: RecipeAblationConfig, recipes: dict[str, Any], variant: dict[str, Any]) -> PretrainConfig:
    values = merged(recipes["base"], variant.get("changes", {}))
    values.update(out=str(Path(config.out) / slug(variant["name"])), resume=True, progress=config.progress,
                  device=config.device, precision=config.precision)
    if config.data is not None:
        values["data"] = config.data
    return config_from_values(PretrainConfig, values, f"recipe variant {variant['name']!r}")


def kept_epoch(history: pd.DataFrame) -> pd.Series:
    """The metrics row of the epoch pretraining keeps as ``best.pt`` (lowest validation loss)."""
    return history.loc[history["val_loss"].idxmin()]


def variant_history(config: RecipeAblationConfig, name: str) -> pd.DataFrame | None:
    """A variant's per-epoch metrics: its run folder's, else the copy kept in the report folder."""
    for path in (Path(config.out) / slug(name) / "metrics.csv", Path(config.report_dir) / "runs" / f"{slug(name)}.csv"):
        if path.is_file():
            return pd.read_csv(path)
    return None


def _changes_text(changes: dict[str, Any], prefix: str = "") -> str:
    parts = [_changes_text(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={v}"
             for k, v in changes.items()]
    return ", ".join(parts) or "—"


def ablation_rows(config: RecipeAblationConfig, recipes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for variant in recipes["variants"]:
        history = variant_history(config, variant["name"])
        if history is None:
            continue
        best, epochs = kept_epoch(history), len(history)
        rows.append({"variant": variant["name"], "changes": _changes_text(variant.get("changes", {})),
                     "epochs": epochs, "kept epoch": int(best["epoch"]) + 1,
                     **{label: float(best[column]) for column, label in COLUMNS.items()},
                     "train images/s": float(best["train_samples_per_s"])})
    ceiling = reference_ceiling(config)
    if ceiling is not None:
        epochs, kept, metrics = ceiling
        rows.append({"variant": "supervised reference (ceiling)", "changes": "box-free finding labels",
                     "epochs": epochs, "kept epoch": kept,
                     **{label: float(metrics[column]) for column, label in REFERENCE_COLUMNS.items()
                        if column in metrics}})
    return rows


def reference_ceiling(config: RecipeAblationConfig) -> tuple[int, int, dict[str, float]] | None:
    """(epochs, kept epoch from 1, validation AUROCs) of the supervised reference: the ``--reference``
    run's best validation mass epoch, else, on the embedded set, the shipped reference's card."""
    if config.reference:
        history = pd.read_csv(Path(config.reference) / "metrics.csv")
        best = history.loc[history["val_auroc_Mass"].idxmax()]
        return len(history), int(best["epoch"]) + 1, best.to_dict()
    if uses_embedded(config.data) and shipped_reference().is_file():
        card = shipped_reference_card()
        return int(card["epochs_trained"]), int(card["kept_epoch"]), card["validation"]
    return None


def write_report(config: RecipeAblationConfig, recipes: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(ablation_rows(config, recipes))
    if frame.empty:
        return frame
    stem = Path(config.report_dir) / "clip_ablation"
    write_table(frame.round(3), stem, caption="CLIP recipe ablation (validation split)")
    save_json(stem.with_suffix(".json"), {"recipes": recipes, "config": asdict(config),
                                          "rows": frame.to_dict(orient="records")})
    return frame


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(RecipeAblationConfig, argv, prog="python -m analyses.recipe_ablation",
                          description=__doc__.splitlines()[0])
    recipes = read_recipes(config.recipes)
    names = [variant["name"] for variant in recipes["variants"]]
    unknown = sorted(set(config.only) - set(names))
    if unknown:
        raise InputError(f"--only {unknown}: not in the recipe file (its variants: {names})")
    chosen = [variant for variant in recipes["variants"] if not config.only or variant["name"] in config.only]
    runs = [(variant, variant_config(config, recipes, variant)) for variant in chosen]  # all checked first
    for variant, pretrain_config in runs:
        print(f"variant {variant['name']!r}: {_changes_text(variant.get('changes', {}))}", flush=True)
        pretrain(pretrain_config)
        kept = Path(config.report_dir) / "runs" / f"{slug(variant['name'])}.csv"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(pretrain_config.out) / "metrics.csv", kept)
        frame = write_report(config, recipes)
    print(frame.round(3).to_string(index=False))
    return frame


if __name__ == "__main__":
    run_main(main)
