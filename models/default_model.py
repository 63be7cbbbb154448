"""The default CLIP model: pretrained on first use with a fixed small budget and cached.

Analyses (FActOR, zero-shot, saliency) need a checkpoint; a user who gives none gets this one, so
``python -m mammo_interp.factor --attribute mass`` runs on a fresh machine. The run lives in
``<cache>/models/default-clip-<key>/`` where the key hashes the pretraining config and the dataset
root; an interrupted run resumes from its ``last.pt``, ``complete.json`` marks a finished one, and
a file lock makes concurrent callers wait for one training instead of starting several.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
from pathlib import Path

from models.data.default import cache_dir, default_data_root
from models.io import save_json
from models.pretrain import PretrainConfig, pretrain

# A fixed number of epochs (not a time budget), so the model does not depend on machine speed;
# max_minutes only caps a pathologically slow machine. 2 epochs at 256 x 160: README "Measured".
DEFAULT_PRETRAIN = PretrainConfig(epochs=2, max_minutes=8.0, image_size=(256, 160))
COMPLETE_MARKER = "complete.json"


def default_run_dir(data: str | Path | None = None, config: PretrainConfig = DEFAULT_PRETRAIN) -> Path:
    """Where the default model for ``data`` (None: the embedded synthetic set) is cached."""
    root = default_data_root(data, progress=False) if data is not None else None
    key = json.dumps({"config": dataclasses.replace(config, out="", progress=True).to_dict(),
                      "data": str(Path(root).resolve()) if root is not None else "default"},
                     sort_keys=True, default=str)
    return cache_dir() / "models" / f"default-clip-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def resolve_checkpoint(checkpoint: str | Path | None, data: str | Path | None = None,
                       progress: bool = True) -> Path:
    """The checkpoint an analysis uses: the given file, or the default model for ``data``.

    Raises:
        FileNotFoundError: ``checkpoint`` is given but is not a file.
    """
    if checkpoint is None:
        return default_checkpoint(data, progress=progress)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    return Path(checkpoint)


def default_checkpoint(data: str | Path | None = None, config: PretrainConfig = DEFAULT_PRETRAIN,
                       progress: bool = True) -> Path:
    """``best.pt`` of the default model for ``data``, pretraining it first if it is not cached."""
    run = default_run_dir(data, config)
    best = run / "best.pt"
    if (run / COMPLETE_MARKER).is_file() and best.is_file():
        return best
    run.mkdir(parents=True, exist_ok=True)
    with (run / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first one's model
        if (run / COMPLETE_MARKER).is_file() and best.is_file():
            return best
        run_config = dataclasses.replace(config, data=str(data) if data is not None else None,
                                         out=str(run), resume=True, progress=progress)
        best = pretrain(run_config)
        save_json(run / COMPLETE_MARKER, {"checkpoint": str(best), "config": run_config.to_dict()})
    return best
