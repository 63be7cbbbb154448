"""Faithfulness and the model-randomization sanity check of every localization method, per layer.

``python -m analyses.method_checks [--attribute mass] [--layers head blocks.4]`` takes the first
``--images`` test images with the finding and, for each method of ``mammo_interp.factor``:

- deletion and insertion curves of the CLIP cosine to the attribute (:mod:`mammo_interp.faithfulness`)
  on the trained model;
- then the cascading model-randomization check (:mod:`mammo_interp.sanity`): the image side is
  re-initialized from the top down and the maps remade after each group.

Writes ``REPORT_DIR/<attribute>_<layer>`` (.md/.csv/.tex: one row per method with both checks),
``_faithfulness_long.csv`` and ``_randomization_long.csv`` (every image, curve and stage) and
``_randomization`` (.png/.pdf: the Spearman curves and one image's maps as the model is randomized).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import numpy as np
import pandas as pd
import torch

from analyses.layer_study import LayerStudyOptions, per_layer_main
from mammo_interp import heatmaps as hm
from mammo_interp import methods as registry
from mammo_interp.factor_study import FactorStudy
from mammo_interp.faithfulness import BLUR_SIGMA, perturbation_curves
from mammo_interp.mapper import ChannelMapper
from mammo_interp.plotting import save_figure
from mammo_interp.sanity import (FAIL_SPEARMAN, cascading_randomization, plot_randomization,
                                 randomization_stages, randomization_verdict)
from models.cli import run_main
from models.data.sources import TEST
from models.device import module_device
from models.io import atomic_write
from models.metrics import Estimate, bootstrap
from models.report_tables import write_table
from models.run_options import n_boot_field

METHODS = ("factor", "mean_channels", "random_channels", "oracle_channel", "gradcam", "gradcam_plus_plus",
           "layercam", "gscorecam", "integrated_gradients", "breast_prior")
FAITHFULNESS_COLUMNS = {"deletion_auc": "deletion AUC (lower better)", "insertion_auc": "insertion AUC",
                        "difference": "insertion - deletion"}


@dataclass(frozen=True)
class MethodChecksConfig(LayerStudyOptions):
    """Which study, which methods, how many images."""

    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": lambda: f"registered methods to check: {', '.join(registry.available())}"})
    images: int = field(default=24, metadata={"help": "first test images with the finding that are compared"})
    out: str = field(default="runs/factor", metadata={
        "help": "FActOR's folder, where the published mapper of each layer is found or trained"})
    report_dir: str = field(default="reports/localization/checks", metadata={"help": "tables and figures"})
    n_boot: int = n_boot_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        registry.check(self.methods)
        if self.images < 1:
            raise ValueError(f"--images must be at least 1, got {self.images}")


def checked_images(study: FactorStudy, count: int) -> np.ndarray:
    """Positions in the test split of its first ``count`` images with the finding."""
    return np.flatnonzero(study.features(TEST).has_category(study.category_index))[:count]


def faithfulness_rows(study: FactorStudy, mapper: ChannelMapper, rows: np.ndarray,
                      methods: tuple[str, ...]) -> pd.DataFrame:
    """Deletion/insertion per method and image, scored by the CLIP cosine to the attribute."""
    dataset = study.dataset(TEST)
    images = torch.stack([dataset[int(i)]["image"] for i in rows])
    masks = study.features(TEST).subset(rows).masks
    target = hm.SimilarityTarget(study.model, study.text_embedding).eval()
    device = module_device(study.model)

    def score(batch: torch.Tensor) -> torch.Tensor:
        with study.precision.autocast():
            return target(batch.to(device))

    frames = [perturbation_curves(score, images, maps, masks).assign(method=name)
              for name, maps in study.method_heatmaps(mapper, TEST, methods, rows=rows)]
    return pd.concat(frames, ignore_index=True)


def mean_with_ci(values: pd.Series, n_boot: int, seed: int) -> Estimate:
    """Mean over images with its bootstrap 95 % CI."""
    return bootstrap(lambda _, v: float(np.mean(v)), np.zeros(len(values)), values.to_numpy(), n_boot, seed)


def spearman_cell(median: float) -> str:
    """The median Spearman, or ``flat maps`` where every image's map turned constant (the median
    skips undefined Spearman values; all undefined: no map ranks any pixel, which passes the check)."""
    return "flat maps" if np.isnan(median) else f"{median:.2f}"


def summary_table(faithful: pd.DataFrame, verdict: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per method: deletion, insertion and their difference (means with CIs), and the
    randomization check's median Spearman and verdict."""
    checks = verdict.set_index("method")
    rows = []
    for method, group in faithful.groupby("method", sort=False):
        rows.append({"method": method, **{label: mean_with_ci(group[column], n_boot, seed).format()
                                          for column, label in FAITHFULNESS_COLUMNS.items()},
                     "Spearman, all randomized": spearman_cell(checks.loc[method, "spearman"]),
                     "SSIM, all randomized": f"{checks.loc[method, 'ssim']:.2f}",
                     "randomization check": "passes" if checks.loc[method, "passes"] else "FAILS"})
    return pd.DataFrame(rows)


def run_layer(config: MethodChecksConfig, layer: str) -> list[Path]:
    """Faithfulness on the trained model, then the randomization check, which re-initializes the
    study's model in place (nothing uses it after)."""
    study = FactorStudy(config.factor_config(layer, methods=config.methods, out=config.out))
    mapper = study.mapper()
    rows = checked_images(study, config.images)
    faithful = faithfulness_rows(study, mapper, rows, config.methods)

    def heatmaps() -> dict[str, torch.Tensor]:
        return dict(study.method_heatmaps(mapper, TEST, config.methods, rows=rows, fresh=True))

    stages = randomization_stages(study.model)
    masks = study.features(TEST).subset(rows).masks
    randomized, examples = cascading_randomization(study.model, heatmaps, masks, config.seed, stages,
                                                   config.progress)
    stem = Path(config.report_dir) / f"{study.slug}_{layer.replace('.', '')}"
    caption = (f"Faithfulness and model randomization ({study.category}, {study.encoder.config.name} layer "
               f"{layer}, checkpoint {study.checkpoint.name}) on the first {len(rows)} test images with the "
               f"finding: areas under the deletion and insertion curves of the CLIP cosine to the attribute "
               f"(breast pixels moved hottest first to or from a blurred copy, sigma {BLUR_SIGMA:g} px), means "
               f"with 95% bootstrap CIs ({config.n_boot} resamples); median Spearman (breast pixels) and SSIM "
               f"between maps on the trained model and with the image side re-initialized down to the stem "
               f"({len(stages)} groups); a method fails at a median Spearman of {FAIL_SPEARMAN} or more")
    written = write_table(summary_table(faithful, randomization_verdict(randomized), config.n_boot, config.seed),
                          stem, caption, f"tab:checks-{study.slug}-{layer}")
    for suffix, frame in (("_faithfulness_long", faithful), ("_randomization_long", randomized)):
        data = frame.to_csv(index=False).encode()
        written.append(atomic_write(Path(f"{stem}{suffix}.csv"), lambda stream, data=data: stream.write(data)))
    image = study.dataset(TEST)[int(rows[0])]["image"][0].numpy()
    figure = plot_randomization(randomized, examples, image, [stage.name for stage in stages],
                                f"{study.category} maps as the image side is randomized from the top (layer {layer})")
    return written + save_figure(figure, Path(f"{stem}_randomization"))


def main(argv: list[str] | None = None) -> list[Path]:
    return per_layer_main(MethodChecksConfig, argv, "python -m analyses.method_checks",
                          "Faithfulness (deletion/insertion) and the model-randomization sanity check (Adebayo et "
                          "al. 2018) of every localization method, on the first test images with the finding.",
                          run_layer)


if __name__ == "__main__":
    run_main(main)
