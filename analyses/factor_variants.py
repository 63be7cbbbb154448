"""FActOR variants beside the published method, every setting chosen on the validation split.

``python -m analyses.factor_variants [--attribute mass] [--layers head blocks.4]`` runs, per feature
layer, published Mammo-FActOR as the paper specifies it (its own row: mapper inputs divided by one
global std, the top-3 channels by alignment, boxes at the 0.95 heatmap quantile) and beside it
variants that change one thing at a time:

- the mapper's input scaling (``--mapper-standardize``): ``global`` (published) or ``channel`` (each
  channel standardized by its training mean and std, so no high-magnitude channel dominates the
  mapper's max over channels);
- the channel weighting: top-k by alignment (k in :data:`TOP_K`) or soft weights (a softmax of the
  alignment at a temperature in :data:`TEMPERATURES`);
- the box rule's heatmap quantile (:data:`QUANTILES`).

Each method (variants and baselines alike: mean of channels, Grad-CAM, Grad-CAM++, LayerCAM,
gScoreCAM, random channels, the oracle channel, the breast prior) gets the setting with the best validation IoU-hit@0.25; only then is the
test split read, once per method, with bootstrap CIs. Writes ``REPORT_DIR/<attribute>_<layer>``
(.md/.csv/.tex with a ``setting`` column saying what validation chose, ``_long.csv`` with the floats)
and ``_validation.csv`` (every setting's validation score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import models  # noqa: F401  (runtime set-up first)
import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses.layer_study import LayerStudyOptions, per_layer_main
from mammo_interp import heatmaps as hm
from mammo_interp.boxes import BoxRule
from mammo_interp import methods as registry
from mammo_interp.factor import FactorConfig
from mammo_interp.factor_study import FactorStudy
from mammo_interp.features import FeatureSet
from mammo_interp.localization import evaluate_methods, write_localization_table
from mammo_interp.mapper import STANDARDIZATIONS, MapperConfig
from mammo_interp.methods import channels as weighting
from models.cli import run_main
from models.data.sources import TEST, VALIDATION
from models.io import atomic_write
from models.run_options import n_boot_field

TOP_K = (1, 3, 5, 10, 20, 50)
TEMPERATURES = (0.01, 0.03, 0.1, 0.3, 1.0)  # 1.0: close to the mean of all channels
QUANTILES = (0.8, 0.9, 0.95, 0.98)
PUBLISHED = "FActOR, published"
BASELINES = ("mean_channels", "gradcam", "gradcam_plus_plus", "layercam", "gscorecam", "random_channels",
             "oracle_channel", "breast_prior")
SELECTION_METRIC = "IoU-hit@0.25"


@dataclass(frozen=True)
class FactorVariantsConfig(LayerStudyOptions):
    """Which study the variants run on; FActOR's defaults otherwise."""

    baselines: tuple[str, ...] = field(default=BASELINES, metadata={
        "help": "baseline methods of mammo_interp.factor, each with its quantile chosen on validation"})
    out: str = field(default="runs/factor_variants", metadata={"help": "mapper and feature-study folder"})
    report_dir: str = field(default="reports/localization/variants", metadata={"help": "tables"})
    n_boot: int = n_boot_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        registry.check(self.baselines, "--baselines")


def study_config(config: FactorVariantsConfig, layer: str, standardize: str) -> FactorConfig:
    """The FActOR study of one layer whose mapper scales its inputs by ``standardize``."""
    return config.factor_config(layer, mapper=MapperConfig(standardize=standardize), methods=config.baselines,
                                out=str(Path(config.out) / standardize), report_dir=config.report_dir,
                                n_boot=config.n_boot)


def weightings(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every channel weighting of the grid, ``(N, C)`` each, by setting name."""
    options = {f"top-{k}": weighting.top_k_weights(scores, k) for k in TOP_K}
    options.update({f"soft T={t}": torch.softmax(scores / t, dim=1) for t in TEMPERATURES})
    return options


@dataclass(frozen=True)
class Choice:
    """A method's setting chosen on validation: a weighting (channel methods) and a box quantile."""

    method: str
    setting: str
    quantile: float
    validation: float


def choose(method: str, candidates: Iterator[tuple[str, torch.Tensor]], features: FeatureSet,
           category_index: int, rule: BoxRule, grid: list[dict[str, Any]]) -> Choice:
    """The (setting, quantile) of ``method`` with the best validation IoU-hit@0.25 (first on ties,
    so the smaller k and the paper's quantile order decide); every score is appended to ``grid``."""
    best: Choice | None = None
    for setting, maps in candidates:
        for quantile in QUANTILES:
            results, _ = evaluate_methods({setting: maps}, features, category_index,
                                          replace(rule, quantile=quantile), n_boot=1)
            score = results[setting][SELECTION_METRIC].value
            grid.append({"method": method, "setting": setting, "quantile": quantile, SELECTION_METRIC: score})
            if best is None or score > best.validation:
                best = Choice(method, setting, quantile, score)
    if best is None:
        raise ValueError(f"{method}: no heatmaps to choose a setting from")
    return best


class LayerVariants:
    """Published FActOR, its variants and the baselines on one layer: heatmaps of any split. One
    FActOR study per mapper scaling (each finds or trains its own mapper; the feature cache is shared)."""

    def __init__(self, config: FactorVariantsConfig, layer: str) -> None:
        self.studies = {s: FactorStudy(study_config(config, layer, s)) for s in STANDARDIZATIONS}
        self.base = self.studies["global"]
        self.mappers = {s: study.mapper() for s, study in self.studies.items()}

    def _alignment(self, standardize: str, split: str) -> tuple[FeatureSet, torch.Tensor]:
        features = self.base.features(split)
        return features, weighting.channel_alignment(self.mappers[standardize], features.maps, self.base.text_embedding)

    def channel_candidates(self, standardize: str, split: str) -> Iterator[tuple[str, torch.Tensor]]:
        features, scores = self._alignment(standardize, split)
        for setting, weights in weightings(scores).items():
            yield setting, hm.channel_heatmaps(features.maps, weights, features.masks)

    def published(self, split: str) -> torch.Tensor:
        features, scores = self._alignment("global", split)
        return hm.channel_heatmaps(features.maps, weighting.top_k_weights(scores, self.base.config.top_k), features.masks)

    def baseline(self, method: str, split: str) -> Iterator[tuple[str, torch.Tensor]]:
        for _, maps in self.base.method_heatmaps(self.mappers["global"], split, (method,)):
            yield "", maps

    def candidates(self, split: str) -> dict[str, Callable[[], Iterator[tuple[str, torch.Tensor]]]]:
        """Method name -> its settings' heatmaps on ``split``, made lazily, one setting at a time."""
        methods: dict[str, Callable[[], Iterator[tuple[str, torch.Tensor]]]] = {
            f"FActOR, {s} scaling": (lambda s=s: self.channel_candidates(s, split)) for s in STANDARDIZATIONS}
        provides = self.base.method_context(self.mappers["global"]).provides()
        methods.update({registry.get(m).label: (lambda m=m: self.baseline(m, split)) for m in self.base.config.methods
                        if set(registry.get(m).needs) <= provides})
        return methods


def run_layer(config: FactorVariantsConfig, layer: str) -> list[Path]:
    """Choose every method's setting on validation, then measure each once on test."""
    variants = LayerVariants(config, layer)
    study, rule = variants.base, variants.base.config.box
    index = study.category_index
    validation = study.features(VALIDATION)
    grid: list[dict[str, Any]] = []
    choices = [choose(method, make(), validation, index, rule, grid)
               for method, make in tqdm(variants.candidates(VALIDATION).items(), desc=f"validation {layer}",
                                        disable=not config.progress, leave=False)]
    test = study.features(TEST)
    test_candidates = variants.candidates(TEST)
    results, _ = evaluate_methods({PUBLISHED: variants.published(TEST)}, test, index, rule, config.n_boot,
                                  config.seed)
    chosen = {PUBLISHED: f"global scaling, top-{study.config.top_k}, quantile {rule.quantile} (the paper's)"}
    for choice in choices:
        maps = next(maps for setting, maps in test_candidates[choice.method]() if setting == choice.setting)
        measured, _ = evaluate_methods({choice.method: maps}, test, index, replace(rule, quantile=choice.quantile),
                                       config.n_boot, config.seed)
        results.update(measured)
        chosen[choice.method] = (f"{choice.setting + ', ' if choice.setting else ''}quantile {choice.quantile} "
                                 f"(validation {SELECTION_METRIC} {choice.validation:.3f})")
    stem = Path(config.report_dir) / study.out.name
    positives = int(test.has_category(index).sum())
    caption = (f"{study.category} localization on the test split ({positives} of {len(test)} images), "
               f"{study.encoder.config.name} layer {layer}, checkpoint {study.checkpoint.name}: FActOR as "
               f"published, and its variants and the baselines each with the setting (channel "
               f"weighting, heatmap quantile) of best validation {SELECTION_METRIC}; at most {rule.max_boxes} "
               f"boxes; 95% bootstrap CIs over images ({config.n_boot} resamples)")
    written = write_localization_table(results, stem, caption, f"tab:variants-{study.slug}-{layer}", chosen)
    grid_csv = pd.DataFrame(grid).to_csv(index=False).encode()
    return [*written, atomic_write(Path(f"{stem}_validation.csv"), lambda stream: stream.write(grid_csv))]


def main(argv: list[str] | None = None) -> list[Path]:
    return per_layer_main(FactorVariantsConfig, argv, "python -m analyses.factor_variants",
                          "Published FActOR beside its variants (mapper input scaling, channel weighting, "
                          "box quantile) and the baselines, every setting chosen on the validation split.",
                          run_layer)


if __name__ == "__main__":
    run_main(main)
