"""Mammo-FActOR weakly supervised boxes and their localization table: ``python -m mammo_interp.factor``.

With no arguments beyond ``--attribute`` it runs on the embedded synthetic dataset with the default
CLIP model shipped in the package (``models.default_model``). Stages, each reusing what the previous
left on disk:

1. ``extract``: frozen-encoder feature maps of the training, validation and test splits (cached);
2. ``train``: the per-attribute channel mapper, early-stopped on the validation split
   (``OUT/<attribute>/mapper.pt``). On the embedded set a mapper shipped in the package
   (``mammo_interp/weights``, written by ``--ship-to``) whose key matches (checkpoint sha256, layer,
   size, settings, sentences, data config) is used instead, and then only the validation and test
   splits are read, so a fresh machine generates only their studies;
3. ``predict``: FActOR heatmaps and boxes on the test split, in preprocessed and original DICOM
   pixels (``OUT/<attribute>/predictions.csv``), timed against a bare backbone forward;
4. ``evaluate`` (and ``all``): FActOR and the baselines under one heatmap→box rule, a table with
   bootstrap CIs (``REPORT_DIR/<attribute>_<layer>.md/.csv/.tex``) and an overlay figure. On the
   embedded set the shipped supervised reference (``models/weights/reference.pt``) adds its ceiling row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import models  # noqa: F401 - runtime guard before torchvision/transformers
from mammo_interp import methods as registry
from mammo_interp.boxes import BoxRule
from mammo_interp.mapper import MapperConfig
from models.checkpoints import check_input_size
from models.cli import parse_command, run_main
from models.data.default import uses_embedded
from models.data.reading import ReadOptions, read_options_field
from models.default_model import checkpoint_field
from models.device import check_spelling
from models.errors import check_choice
from models.metrics import Estimate
from models.run_options import (
    batch_size_field, device_field, n_boot_field, precision_field, progress_field, seed_field, threads_field,
    workers_field,
)
from models.text import attribute_category
from mammo_interp.factor_study import FactorStudy

STAGES = ("extract", "train", "predict", "evaluate", "all")
METHODS = ("factor", "gradcam", "integrated_gradients", "random_channels", "mean_channels",
           "oracle_channel", "breast_prior", "supervised_reference")  # the table's rows unless --methods says

@dataclass(frozen=True)
class FactorConfig:
    """One FActOR localization study (one attribute, one model, one feature layer)."""

    attribute: str = field(default="mass", metadata={
        "help": "finding category to localize, e.g. mass, 'suspicious calcification', "
                "architectural_distortion, asymmetry"})
    data: str | None = field(default=None, metadata={
        "help": "dataset folder (VinDr or RSNA layout); default: the embedded synthetic set"})
    reading: ReadOptions = read_options_field()
    checkpoint: str | None = checkpoint_field()
    text_encoder: str | None = field(default=None, metadata={
        "help": "local text-model folder, needed for Mammo-CLIP checkpoints"})
    layer: str | None = field(default=None, metadata={
        "help": "feature layer: 'head' (last conv, the paper's) or a timm stage such as 'blocks.4'; "
                "default: the checkpoint's"})
    image_size: tuple[int, ...] = field(default=(), metadata={
        "help": "input H W; default: the size the checkpoint was pretrained at"})
    reference: str | None = field(default=None, metadata={
        "help": "supervised-reference checkpoint (python -m models.reference) for the ceiling row: "
                "Grad-CAM on its finding logit; default: the shipped reference on the embedded set when "
                "it predicts the attribute at the study's size, else that row is left out"})
    top_k: int = field(default=3, metadata={"help": "channels FActOR sums into a heatmap"})
    box: BoxRule = field(default_factory=BoxRule, metadata={"help": "heatmap -> boxes rule"})
    mapper: MapperConfig = field(default_factory=MapperConfig, metadata={"help": "channel mapper"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": lambda: f"methods to compare, one table row each, in this order (default: {' '.join(METHODS)}); "
                        f"registered: {registry.help_text()}"})
    ig_steps: int = field(default=8, metadata={"help": "Integrated Gradients steps"})
    cam_channels: int = field(default=16, metadata={
        "help": "gScoreCAM: channels of largest gradient it scores, each with one more forward per image"})
    stage: str = field(default="all", metadata={"help": f"run up to this stage: {STAGES}"})
    out: str = field(default="runs/factor", metadata={"help": "folder for mappers and predictions"})
    ship_to: str | None = field(default=None, metadata={
        "help": "train (or reuse OUT's) mapper on the embedded set and write it with its card into this "
                "folder (mammo_interp/weights: the mappers the package ships)"})
    report_dir: str = field(default="reports/localization", metadata={"help": "tables and figures"})
    batch_size: int = batch_size_field()
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    workers: int = workers_field()
    n_boot: int = n_boot_field()
    figure_cases: int = field(default=4, metadata={"help": "test images with the finding in the figure"})
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    seed: int = seed_field()
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, STAGES)
        registry.check(self.methods)
        check_input_size(self.image_size)
        check_spelling(self.device, self.precision, self.workers)
        if self.top_k < 1 or self.cam_channels < 1:
            raise ValueError(f"top_k and cam_channels must be at least 1, got {self.top_k}, {self.cam_channels}")


def run(config: FactorConfig) -> dict[str, Any]:
    """Run ``config.stage`` (and what it needs); returns what the stage produced."""
    study = FactorStudy(config)
    if config.stage == "extract":
        study.extract()
        return {"features": {s: len(study.features(s)) for s in study.needed}}
    if config.stage == "train":
        study.mapper()
        return {"mapper": str(study.out / "mapper.pt")}
    if config.stage == "predict":
        return {"speed": study.predict(), "predictions": str(study.out / "predictions.csv")}
    return study.evaluate()


# rows that use labels the methods are not given: ceilings, not candidates for the best method
REFERENCE_NEEDS = frozenset({"validation boxes", "reference"})


def result_lines(result: dict[str, Any]) -> list[str]:
    """What the command prints at the end: each method's IoU-hit@0.25 and pointing game with their CIs,
    the best method (the ceilings aside) against the breast prior and the published FActOR, the cost
    of the boxes and the table's files."""
    results = {label: {metric: Estimate(**value) for metric, value in row.items()}
               for label, row in result["results"].items()}
    rows = [("method", "layer", "IoU-hit@0.25", "pointing game")]
    rows += [(label, result["layer"], row["IoU-hit@0.25"].format(), row["pointing game"].format())
             for label, row in results.items()]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["", *("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows), ""]
    name_of = {label: name for name, label in registry.labels().items()}
    candidates = [label for label in results if not registry.get(name_of[label]).needs & REFERENCE_NEEDS]
    if candidates:
        best = max(candidates, key=lambda label: results[label]["IoU-hit@0.25"].value)
        against = [f"{name}'s {results[label]['IoU-hit@0.25'].format()}"
                   for name, label in (("the breast prior", registry.labels()["breast_prior"]),
                                       ("published FActOR", registry.labels()["factor"]))
                   if label in results and label != best]
        lines.append(f"best: {best}, IoU-hit@0.25 {results[best]['IoU-hit@0.25'].format()}"
                     + (f", against {' and '.join(against)}" if against else ""))
    speed = result["speed"]
    lines.append(f"boxes: {speed['boxes_images_per_s']:.1f} images/s, {speed['ratio']:.2f}x a bare backbone forward")
    lines.append(f"table: {Path(result['files'][0]).with_suffix('.md')} (+ .csv, .tex; figures beside it)")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_command(
        FactorConfig, argv, "python -m mammo_interp.factor",
        "Mammo-FActOR: align feature-map channels with an attribute's sentences, turn the aligned "
        "channels into heatmaps and boxes, and score them against Grad-CAM, Integrated Gradients "
        "and simple baselines (IoU-hit, AP, pointing game with bootstrap CIs). Default: the "
        "embedded synthetic dataset and the default CLIP model.",
    )
    try:  # bad names and paths: one clear line, before any heavy work
        attribute_category(config.attribute)
        for flag, path in (("--checkpoint", config.checkpoint), ("--reference", config.reference)):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{flag} {path}: no such file")
        if config.ship_to is not None and not uses_embedded(config.data):
            raise ValueError("--ship-to: only mappers of the embedded set ship (no --data, no $MAMMO_INTERP_DATA)")
    except (ValueError, OSError) as exc:
        raise SystemExit(f"python -m mammo_interp.factor: error: {exc}") from exc
    result = run(config)
    if "results" in result:
        print("\n".join(result_lines(result)))
    else:
        print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    run_main(main)
