"""``python -m models.data.synth --out DIR --n-studies N --seed S``: write a synthetic dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
from models.cli import (
    add_config_file_argument, add_dataclass_arguments, build_dataclass, parse_with_config_file, run_main,
)
from models.data.synth import SynthConfig, generate_dataset
from models.data.synth.config import PREVALENCES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.data.synth",
        description="Generate synthetic 4-view screening mammograms in the VinDr-Mammo layout "
                    "(DICOMs + breast-level/finding CSVs with exact boxes + reports + metadata.json).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (must be empty or absent)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bar (default: on)")
    parser.add_argument("--prevalence", choices=sorted(PREVALENCES), default="enriched",
                        help="finding and density rates: 'enriched' (half the studies with findings, every "
                             "density common; the default) or 'vindr' (VinDr-Mammo's own rates); explicit "
                             "rate flags still override it")
    add_config_file_argument(parser)
    add_dataclass_arguments(parser, SynthConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    preset, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PREVALENCES[preset.prevalence])
    args = parse_with_config_file(parser, argv)
    try:
        config = build_dataclass(SynthConfig, args)
        out = generate_dataset(args.out, config, workers=args.workers, overwrite=args.overwrite,
                               progress=args.progress)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    print(f"wrote {config.n_studies} studies to {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
