"""What boxes cost: ``python -m analyses.box_speed [--layers head blocks.4] [--device cuda]``.

For each localization method of ``mammo_interp.factor`` at each feature layer it times box
prediction from raw images (the method's heatmaps, then the heatmap→box rule on the CPU, as in use)
and its heatmaps alone, against a bare forward of the full image backbone on the same first
``--images`` test images (:func:`mammo_interp.box_timing.time_box_prediction`, best of ``--repeats``,
the three interleaved).
FActOR's budget is at most 1.2 bare forwards. FActOR's channel weightings (top-k,
soft weights) and mapper scalings cost the same (one dense weighted sum over all channels), so one
FActOR row per layer stands for every variant. Writes ``REPORT_DIR/speed_<device type>``
(.md/.csv/.tex).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import pandas as pd

from analyses.bench import machine
from analyses.layer_study import LayerStudyOptions
from mammo_interp import methods as registry
from mammo_interp.factor_study import FactorStudy
from models.cli import parse_command, run_main
from models.device import resolve_device
from models.report_tables import write_table
from models.run_options import batch_size_field

METHODS = ("factor", "mean_channels", "gradcam", "gradcam_plus_plus", "layercam", "gscorecam",
           "integrated_gradients")
BUDGET = 1.2


@dataclass(frozen=True)
class BoxSpeedConfig(LayerStudyOptions):
    """Which methods are timed, on how many images."""

    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": lambda: f"registered methods to time (not the supervised reference): {', '.join(registry.available())}"})
    images: int = field(default=64, metadata={"help": "first test images, timed"})
    batch_size: int = batch_size_field()
    repeats: int = field(default=2, metadata={"help": "timings per method; the best is kept"})
    out: str = field(default="runs/factor", metadata={
        "help": "FActOR's folder, where the mapper of each layer is found or trained"})
    report_dir: str = field(default="reports/localization", metadata={"help": "where the table goes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        registry.check(self.methods)
        if untimed := [m for m in self.methods if not registry.get(m).timed]:
            raise ValueError(f"--methods: {' '.join(untimed)} is a ceiling row, not timed")
        if min(self.images, self.batch_size, self.repeats) < 1:
            raise ValueError(f"--images, --batch-size and --repeats must be at least 1, got "
                             f"{self.images}, {self.batch_size}, {self.repeats}")


def time_layer(config: BoxSpeedConfig, layer: str) -> list[dict]:
    """One row per method at ``layer``: its boxes and the bare forward, both in images per second."""
    study = FactorStudy(config.factor_config(layer, out=config.out, batch_size=config.batch_size))
    mapper = study.mapper()
    rows = []
    for method in config.methods:
        speed = study.time_prediction(mapper, method, config.images, config.repeats)
        label = registry.get(method).label
        rows.append({"layer": layer, "method": label, "images": speed["images"],
                     "boxes, images/s": speed["boxes_images_per_s"],
                     "bare forward, images/s": speed["bare_images_per_s"],
                     "heatmaps / bare forward": speed["heatmaps_ratio"],
                     "boxes / bare forward": speed["ratio"],
                     f"within {BUDGET}x": "yes" if speed["ratio"] <= BUDGET else "no"})
        print(f"{layer} {label}: {speed['boxes_images_per_s']:.1f} images/s, "
              f"{speed['ratio']:.2f}x a bare forward", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[Path]:
    prog = "python -m analyses.box_speed"
    config = parse_command(BoxSpeedConfig, argv, prog,
                          "Seconds for boxes from raw images by each localization method, against a bare "
                          "backbone forward of the same images (FActOR's budget: 1.2x).")
    device = resolve_device(config.device)
    frame = pd.DataFrame([row for layer in config.layers for row in time_layer(config, layer)])
    shown = frame.assign(**{column: frame[column].map(lambda v: f"{v:.2f}" if v < 10 else f"{v:,.0f}")
                            for column in ("boxes, images/s", "bare forward, images/s", "heatmaps / bare forward",
                                           "boxes / bare forward")})
    caption = (f"Box prediction from raw images ({config.attribute}; heatmaps, then boxes on the CPU), and the "
               f"heatmaps alone, against a bare forward of the image backbone, best of {config.repeats} timings on the first {config.images} "
               f"test images, batches of {config.batch_size}; {machine()}, device {device}, precision "
               f"{config.precision}. FActOR's channel weightings and mapper scalings cost the same.")
    return write_table(shown, Path(config.report_dir) / f"speed_{device.type}", caption,
                       f"tab:box-speed-{device.type}")


if __name__ == "__main__":
    run_main(main)
