"""The options every per-layer localization analysis shares: which FActOR study it runs on.

``analyses.factor_variants``, ``analyses.method_checks`` and ``analyses.box_speed`` each run one
:class:`mammo_interp.factor_study.FactorStudy` per feature layer; their configs extend
:class:`LayerStudyOptions` with what is their own and build each layer's study with
:meth:`LayerStudyOptions.factor_config`; :func:`per_layer_main` is the command line of those whose
layers each write their own files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mammo_interp.factor import FactorConfig
from models.checkpoints import check_input_size
from models.cli import parse_command
from models.data.reading import ReadOptions, read_options_field
from models.device import check_spelling
from models.run_options import device_field, precision_field, progress_field, seed_field, threads_field, workers_field


@dataclass(frozen=True)
class LayerStudyOptions:
    """Model, data and layers of the studies; FActOR's defaults for everything else."""

    attribute: str = field(default="mass", metadata={"help": "finding category, as for mammo_interp.factor"})
    layers: tuple[str, ...] = field(default=("head", "blocks.4"), metadata={"help": "feature layers"})
    checkpoint: str | None = field(default=None, metadata={"help": "CLIP checkpoint; default: the shipped model"})
    data: str | None = field(default=None, metadata={"help": "dataset folder; default: the synthetic set"})
    reading: ReadOptions = read_options_field()
    image_size: tuple[int, ...] = field(default=(), metadata={
        "help": "input H W; default: the checkpoint's pretraining size"})
    cam_channels: int = field(default=16, metadata={
        "help": "gScoreCAM: channels of largest gradient it scores (one forward per image each)"})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "training studies held out (mapper, oracle channel, choices)"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    workers: int = workers_field()
    seed: int = seed_field("splits, random channels, bootstrap")
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        check_input_size(self.image_size)
        check_spelling(self.device, self.precision, self.workers)
        if not self.layers:
            raise ValueError("give at least one layer")

    def factor_config(self, layer: str, **changes: Any) -> FactorConfig:
        """The FActOR study of ``layer`` with these options and ``changes`` (its other settings)."""
        return FactorConfig(attribute=self.attribute, checkpoint=self.checkpoint, data=self.data,
                            reading=self.reading, layer=layer, image_size=self.image_size,
                            cam_channels=self.cam_channels, validation_fraction=self.validation_fraction,
                            device=self.device, precision=self.precision, workers=self.workers, seed=self.seed,
                            progress=self.progress, **changes)


Options = TypeVar("Options", bound=LayerStudyOptions)


def per_layer_main(cls: type[Options], argv: list[str] | None, prog: str, description: str,
                   run_layer: Callable[[Options, str], list[Path]]) -> list[Path]:
    """Parse ``cls`` from ``argv``, check its output folders, then ``run_layer`` each of its layers
    in turn; returns every file written."""
    config = parse_command(cls, argv, prog, description)
    return [path for layer in config.layers for path in run_layer(config, layer)]
