"""The run options the commands share, each declared once with its help: a config takes the ones it
uses (``n_boot: int = n_boot_field()``), so a flag reads the same in every command. What a
``--device`` or ``--precision`` value means is :mod:`models.device`'s."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from models.device import DEVICE_HELP, PRECISION_HELP


def device_field() -> Any:
    """``--device``: where a command runs its model."""
    return field(default="auto", metadata={"help": DEVICE_HELP})


def threads_field() -> Any:
    """``--threads``: torch's CPU threads, applied by :func:`models.cli.parse_command`."""
    return field(default=0, metadata={"help": (
        "CPU threads of torch's kernels (0: one per core); started on a busy machine, waiting threads sleep "
        "after a short spin, so jobs sharing the cores share them fairly (docs/measurements.md)")})


def precision_field() -> Any:
    """``--precision``: the autocast of a command that trains or runs a model at scale."""
    return field(default="auto", metadata={"help": PRECISION_HELP})


def workers_field() -> Any:
    """``--workers``: DataLoader processes of a command that reads images."""
    return field(default=0, metadata={
        "help": "DataLoader processes decoding images (0: in the main process); results do not depend on it"})


def batch_size_field() -> Any:
    """``--batch-size``: images per forward pass."""
    return field(default=32, metadata={"help": "images per forward pass"})


def n_boot_field() -> Any:
    """``--n-boot``: bootstrap resamples behind every confidence interval."""
    return field(default=1000, metadata={"help": "bootstrap resamples of the confidence intervals"})


def seed_field(drives: str = "") -> Any:
    """``--seed``; ``drives`` says what it seeds in this command (shown in ``--help``)."""
    return field(default=0, metadata={"help": f"random seed{f' ({drives})' if drives else ''}"})


def progress_field(over: str = "") -> Any:
    """``--progress/--no-progress``; ``over``: what one bar counts, where the command shows one."""
    return field(default=True, metadata={"help": f"show a progress bar over {over}" if over else "progress bars"})


__all__ = ["batch_size_field", "device_field", "n_boot_field", "precision_field", "progress_field", "seed_field",
           "threads_field", "workers_field"]
