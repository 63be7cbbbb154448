"""``python -m models.convert_checkpoint``: turn a trusted checkpoint that pickles objects into a plain one.

Every loader here reads with ``weights_only=True`` and refuses a file that pickles classes beyond
tensors, plain containers and OmegaConf configs (:mod:`models.safe_load`). For a file whose source the
user trusts, this command unpickles it in full once (which runs code stored in the file, and needs the
libraries its objects come from), turns every object into plain data (:func:`plain_data`), writes the
result atomically, and checks that it reads back with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.cli import parse_config, run_main
from models.errors import InputError
from models.io import save_torch
from models.safe_load import load_weights_only

PROG = "python -m models.convert_checkpoint"


@dataclass(frozen=True)
class ConvertConfig:
    checkpoint: str = field(default="", metadata={"help": "the checkpoint to convert"})
    plain: str = field(default="", metadata={"help": "where the plain checkpoint goes (a new file)"})
    trust_code: bool = field(default=False, metadata={
        "help": "required: unpickling the checkpoint in full runs code stored in it; give it only for a file "
                "whose source you trust (default: False)"})

    def __post_init__(self) -> None:
        if not self.checkpoint or not self.plain:
            raise ValueError("--checkpoint FILE and --plain NEW_FILE are both required")
        if not self.trust_code:
            raise ValueError("converting unpickles the checkpoint in full, which runs code stored in it: "
                             "pass --trust-code only if you trust where the file comes from")


def plain_data(value: Any) -> Any:
    """``value`` as tensors and plain containers only: OmegaConf containers via ``OmegaConf.to_container``
    (unresolved), dataclasses and namespaces as dicts, numpy values as Python scalars or tensors, enums and
    paths as strings; any other object becomes its ``repr`` string (the model weights are tensors already)."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # the file pickled omegaconf objects, so omegaconf is installed

        return plain_data(OmegaConf.to_container(value, resolve=False))
    if isinstance(value, dict):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain_data(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_data(dataclasses.asdict(value))
    if isinstance(value, argparse.Namespace):
        return plain_data(vars(value))
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return str(value.name)
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    return repr(value)


def convert(config: ConvertConfig) -> Path:
    """Write ``config.plain``: ``config.checkpoint`` fully unpickled (runs its code) and made plain.

    Raises:
        FileNotFoundError: no checkpoint file.
        InputError: the plain file would overwrite the checkpoint or an existing file, or the file
            needs a library that is not installed (named).
    """
    source, target = Path(config.checkpoint), Path(config.plain)
    if not source.is_file():
        raise FileNotFoundError(f"--checkpoint {source}: no such file")
    if target.exists():
        raise InputError(f"--plain {target}: exists already; give a new file name")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=False)  # what --trust-code allows
    except ModuleNotFoundError as exc:
        raise InputError(f"--checkpoint {source}: its pickle needs the library {exc.name!r}; install it "
                         "(pip install ...) and convert again") from None
    save_torch(target, plain_data(payload))
    load_weights_only(target)  # the point of converting: the result reads back safely
    return target


def main(argv: list[str] | None = None) -> Path:
    config = parse_config(ConvertConfig, argv, PROG,
                          "Convert a checkpoint that pickles objects (e.g. a config with classes beyond "
                          "OmegaConf's) into tensors and plain containers, which every command here reads "
                          "with weights_only=True. This unpickles the file in full, running code stored in it: "
                          "use it only on files whose source you trust.")
    target = convert(config)
    print(f"{PROG}: wrote {target} (reads with weights_only=True)")
    return target


if __name__ == "__main__":
    run_main(main)
