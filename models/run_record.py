"""The record every command leaves in each folder it writes: the command line that reproduces the
outputs, the resolved config, the code commit, the date, fingerprints of the checkpoints it reads and
how it used the CPU (torch's threads, OpenMP's wait policy and spin count: they move timings, never
results), so a
committed report says where it came from without naming anyone's machine.

``FOLDER/runs.json`` maps each command line that wrote into ``FOLDER`` to its record (two commands
sharing a report folder, e.g. FActOR for masses and for calcifications, keep one entry each; running
a command again replaces its entry). Paths are written relative to the working directory, or as
``<cache>/...``, ``~/...``, ``<tmp>/...`` and ``<outside>/parent/name`` (see ``portable``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import tempfile
import typing
from pathlib import Path
from typing import Any

import torch

from models.cards import code_commit, sha256
from models.cpu_sharing import SPIN_COUNT, WAIT_POLICY
from models.data.default import cache_dir
from models.io import save_json

RECORD_FILE = "runs.json"
SHIPPED_CARD = Path(__file__).parent / "weights" / "default_clip.json"
CHECKPOINT_FIELDS = ("checkpoint", "reference", "init_checkpoint")


def portable(value: Any, hide_outside: bool = True) -> Any:
    """``value`` with absolute paths made machine-free (recursively through lists and dicts): under the
    cache, the working directory, the home folder or the temp folder they become ``<cache>/...``,
    relative, ``~/...`` or ``<tmp>/...``; anywhere else ``<outside>/`` and their last two parts
    (``hide_outside=False`` keeps temp and outside paths as they are: messages to the user on their machine)."""
    if isinstance(value, dict):
        return {key: portable(item, hide_outside) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, hide_outside) for item in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    roots = [(cache_dir(), "<cache>"), (Path.cwd(), None), (Path.home(), "~")]
    if hide_outside:
        roots.append((Path(tempfile.gettempdir()), "<tmp>"))
    for root, name in roots:
        if path.is_relative_to(root):
            rest = path.relative_to(root)
            return str(rest) if name is None else f"{name}/{rest}"
    return str(Path("<outside>", *path.parts[-2:])) if hide_outside else value


def command_line(config: Any, prog: str) -> str:
    """``prog`` with one flag per value that differs from its default, as the CLI spells it."""
    return shlex.join([*prog.split(), *_flags(config, type(config))])


def _flags(config: Any, cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    flags: list[str] = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            nested = prefix if field.metadata.get("flatten") else f"{prefix}{field.name}_"
            flags += _flags(value, type(value), nested)
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if value == default:
            continue
        flag = "--" + (prefix + field.name).replace("_", "-")
        if hints[field.name] is bool:
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (tuple, list)):
            flags += [flag, *(str(portable(str(item))) for item in value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(portable(value))]
        else:
            flags += [flag, str(portable(str(value)))]
    return flags


def checkpoints(config: Any) -> dict[str, Any]:
    """Name and sha256 of each checkpoint file the config names, and what the explained checkpoint is
    fed (input size and where it came from, normalization: :func:`models.checkpoints.checkpoint_input`);
    the shipped default model's card facts when the command reads it (no checkpoint on the embedded set)."""
    from models.checkpoints import checkpoint_input  # builds on timm and transformers: only when recording

    found: dict[str, Any] = {}
    for name in CHECKPOINT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, str) and Path(value).is_file():
            found[name] = {"file": Path(value).name, "sha256": sha256(value)}
            fed = checkpoint_input(value, getattr(config, "image_size", ())) if name == "checkpoint" else {}
            if fed:
                found[name]["input"] = fed
    if hasattr(config, "checkpoint") and config.checkpoint is None and getattr(config, "data", None) is None:
        card = json.loads(SHIPPED_CARD.read_text())
        found["checkpoint"] = {"file": "shipped default model (models/weights/default_clip.pt)",
                               "sha256": card["sha256"], "card_commit": card.get("commit")}
    return found


def written_summary(paths: list[Path]) -> list[str]:
    """One line per folder a command wrote into: its files, those sharing a stem grouped as
    ``stem.{csv,md,tex}``; the cache only counted, one line per cache kind (``<cache>/preprocessed``
    spreads its files over hundreds of hashed subfolders)."""
    folders: dict[str, list[Path]] = {}
    cached: dict[str, set[str]] = {}
    for path in dict.fromkeys(Path(p).absolute() for p in paths):
        parent = portable(str(path.parent), hide_outside=False)
        if parent.startswith("<cache>/"):
            kind = "/".join(parent.split("/")[:2])
            cached.setdefault(kind, set())
            folders.setdefault(kind, []).append(path)
            if parent != kind:
                cached[kind].add(parent)
        else:
            folders.setdefault(parent, []).append(path)
    lines = []
    for folder, files in folders.items():
        if folder in cached:
            inside = f" in {len(cached[folder])} subfolders" if cached[folder] else ""
            lines.append(f"{folder}/: {len(files)} cached file{'s' * (len(files) != 1)}{inside}")
            continue
        stems: dict[str, list[str]] = {}
        for path in files:
            stems.setdefault(path.stem, []).append(path.suffix.lstrip("."))
        names = [f"{stem}.{suffixes[0]}" if len(suffixes) == 1 else f"{stem}.{{{','.join(sorted(suffixes))}}}"
                 for stem, suffixes in sorted(stems.items())]
        lines.append(f"{folder}/: {', '.join(names)}")
    return lines


def cpu_use() -> dict[str, Any]:
    """torch's CPU threads, OpenMP's wait policy and spin count in this process (None: libgomp's default)."""
    return {"threads": torch.get_num_threads(), **{name: os.environ.get(name) for name in (WAIT_POLICY, SPIN_COUNT)}}


def write_run_record(config: Any, prog: str, folders: list[str]) -> None:
    """Add this command's record to ``runs.json`` in each of ``folders``."""
    line = command_line(config, prog)
    record = {"config": portable(dataclasses.asdict(config)), "commit": code_commit(),
              "date": datetime.date.today().isoformat(), "checkpoints": checkpoints(config), "cpu": cpu_use()}
    for folder in folders:
        path = Path(folder) / RECORD_FILE
        try:
            records = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            records = {}  # a damaged record is rewritten, never a reason to stop the command
        records[line] = record
        save_json(path, dict(sorted(records.items())))
