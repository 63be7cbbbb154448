"""The default CLIP model: project-trained weights shipped inside the package, with a model card.

An analysis given no checkpoint on the embedded default set uses ``models/weights/default_clip.pt``
(fp16; the frozen stock text encoder is not stored; read with ``weights_only=True``), so every
machine gives the same tables without training anything. One command made it::

    python -m models.default_model --out runs/default_clip

It pretrains the recipe ``models/recipes/default_clip.json`` (configs as data) on the default
synthetic set, resumably; scores the kept epoch's zero-shot AUROCs on the test split and on a small
check set; and writes the fp16 weights and their card (``default_clip.json``: command, generator
version, data, commit, validation and test metrics, sha256) into ``--weights-dir``.

``--checkpoint retrain`` on any analysis retrains the recipe from scratch instead (cached under
``<cache>/models/default-clip-<key>/``, resumed after a crash, a file lock keeping concurrent callers
to one training); a user's own ``--data`` without a checkpoint gets the recipe trained on it the same way.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from models.cards import embedded_data, provenance
from models.checkpoints import clip_from_checkpoint, input_size, load_checkpoint
from models.cli import config_from_values, parse_command, run_main
from models.data.check_set import CHECK_SET, check_set_table
from models.data.datasets import ImageDataset
from models.data.default import cache_dir, default_data_root, uses_embedded
from models.data.sources import load_splits, preprocess_cache

from models.io import save_json, save_torch
from models.paired_text import PairedText, dataset_zero_shot
from models.pretrain import PretrainConfig, pretrain
from models.run_options import device_field, precision_field, progress_field, threads_field
from models.run_record import portable

RECIPE_FILE = "default_clip.json"
WEIGHTS_FILE = "default_clip.pt"
CARD_FILE = "default_clip.json"
RETRAIN = "retrain"
COMPLETE_MARKER = "complete.json"


def checkpoint_field() -> Any:
    """The ``--checkpoint`` option every analysis shares (None: the default model)."""
    return field(default=None, metadata={
        "help": "CLIP checkpoint (ours or Mammo-CLIP); default: the shipped default model on the embedded "
                f"set, the default recipe trained on --data otherwise; '{RETRAIN}': retrain the recipe "
                "from scratch (cached)"})


def read_recipe() -> dict[str, Any]:
    """The packaged recipe: ``{"description": ..., "pretrain": {PretrainConfig values}}``."""
    return json.loads((resources.files("models") / "recipes" / RECIPE_FILE).read_text())


def recipe_config(**overrides: Any) -> PretrainConfig:
    """The recipe as a :class:`PretrainConfig`, with ``overrides`` (e.g. ``out``, ``data``) applied."""
    return config_from_values(PretrainConfig, {**read_recipe()["pretrain"], **overrides},
                              f"models/recipes/{RECIPE_FILE}")


def shipped_weights() -> Path:
    """The packaged fp16 checkpoint of the default model."""
    return Path(str(resources.files("models") / "weights" / WEIGHTS_FILE))


def checkpoint_name(path: str | Path) -> str:
    """How reports name a checkpoint: the shipped default model by its package file (the same text
    on every machine), any other by its path."""
    return f"{WEIGHTS_FILE} (shipped)" if Path(path).resolve() == shipped_weights().resolve() else str(path)


def shipped_card() -> dict[str, Any]:
    """The packaged model card of :func:`shipped_weights`."""
    return json.loads((resources.files("models") / "weights" / CARD_FILE).read_text())


def default_run_dir(data: str | Path | None = None, config: PretrainConfig | None = None) -> Path:
    """Where the recipe trained on ``data`` (None: the embedded synthetic set) is cached."""
    config = config or recipe_config()
    root = default_data_root(data, progress=False) if data is not None else None
    # where it runs (device, loader processes) does not name the run: the same recipe on the same data
    key = json.dumps({"config": dataclasses.replace(config, out="", progress=True, device="auto", workers=0).to_dict(),
                      "data": str(Path(root).resolve()) if root is not None else "default"},
                     sort_keys=True, default=str)
    return cache_dir() / "models" / f"default-clip-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def train_default(data: str | Path | None = None, config: PretrainConfig | None = None,
                  progress: bool = True) -> Path:
    """``best.pt`` of the recipe trained on ``data``, training it first if it is not cached."""
    config = config or recipe_config()
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


def resolve_checkpoint(checkpoint: str | Path | None, data: str | Path | None = None,
                       progress: bool = True, device: str = "auto", precision: str = "auto",
                       workers: int = 0) -> Path:
    """The checkpoint an analysis uses: the given file; ``"retrain"``: the recipe retrained from
    scratch on ``data``; None: the shipped weights on the embedded default set, else the recipe
    trained on the user's data (on the analysis's ``device``, ``precision`` and ``workers``).

    Raises:
        FileNotFoundError: ``checkpoint`` is given but is not a file.
    """
    if checkpoint is None and uses_embedded(data):
        return shipped_weights()
    if checkpoint is None or str(checkpoint) == RETRAIN:
        return train_default(data, recipe_config(device=device, precision=precision, workers=workers), progress)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file (or '{RETRAIN}')")
    return Path(checkpoint)


def open_checkpoint(checkpoint: str | Path | None, data: str | Path | None, image_size: Sequence[int] = (),
                    progress: bool = True, device: str = "auto", precision: str = "auto",
                    workers: int = 0) -> tuple[Path, dict[str, Any], tuple[int, int]]:
    """What every study (FActOR, saliency, the split-level ones) starts from: the checkpoint it
    explains (:func:`resolve_checkpoint`), its payload, and the input ``(H, W)`` (the requested
    size, else the one the checkpoint was pretrained at)."""
    path = resolve_checkpoint(checkpoint, data, progress, device, precision, workers)
    payload = load_checkpoint(path)
    return path, payload, input_size(payload, image_size)


def export_weights(checkpoint: str | Path, path: str | Path) -> Path:
    """Write ``checkpoint``'s model compactly: floating tensors in fp16, no training state (the
    config and ``pretrain_config`` stay, so analyses rebuild the model at its input size; its paths
    are written machine-free)."""
    payload = load_checkpoint(checkpoint)
    state = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    return save_torch(path, {"format": payload["format"], "config": payload["config"], "model": state,
                             "pretrain_config": portable(payload["pretrain_config"])})


def zero_shot_of(checkpoint: str | Path, table: pd.DataFrame, size: tuple[int, int]) -> dict[str, float]:
    """Image-level zero-shot AUROCs (mass, calcification, distortion, density) of a checkpoint on a
    split table, keyed by task."""
    clip = clip_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    dataset = PairedText(ImageDataset(table, cache=preprocess_cache(size)), "prompts", seed=0)
    scores = dataset_zero_shot(clip, dataset)
    return {key.removeprefix("val_zeroshot_"): value for key, value in scores.items()}


@dataclass(frozen=True)
class ShipConfig:
    out: str = field(default="runs/default_clip", metadata={"help": "training run folder (resumed)"})
    weights_dir: str = field(default=str(Path(__file__).parent / "weights"), metadata={
        "help": "where the fp16 weights and the card go (default: the package's models/weights)"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    progress: bool = progress_field()


def ship(config: ShipConfig) -> dict[str, Any]:
    """Train the recipe on the default set, export the kept epoch and write its card."""
    pretrain_config = recipe_config(out=config.out, resume=True, progress=config.progress, device=config.device,
                                    precision=config.precision)
    best = pretrain(pretrain_config)
    history = pd.read_csv(Path(config.out) / "metrics.csv")
    kept = history.loc[history["val_loss"].idxmin()]
    splits = load_splits(None, pretrain_config.validation_fraction, pretrain_config.seed, progress=False)
    size = tuple(pretrain_config.image_size)
    weights = export_weights(best, Path(config.weights_dir) / WEIGHTS_FILE)
    card = {
        "model": "default mammo-interp CLIP (EfficientNet-Lite0 image encoder, frozen MiniLM-L6 text encoder)",
        "recipe": read_recipe(),
        "pretrain_config": portable(pretrain_config.to_dict()),
        "data": {**embedded_data(),
                 "images": {"train": len(splits.train), "validation": len(splits.validation),
                            "test": len(splits.test)}},
        "kept_epoch": int(kept["epoch"]) + 1,
        "epochs_trained": len(history),
        "validation": {k: float(kept[k]) for k in history.columns if k.startswith("val_")},
        "test_zero_shot_auroc": zero_shot_of(weights, splits.test, size),
        "check": {"synthetic": CHECK_SET.to_dict(), "zero_shot_auroc": zero_shot_of(weights, check_set_table(), size)},
        **provenance(weights, "models.default_model"),
    }
    save_json(Path(config.weights_dir) / CARD_FILE, card)
    return card


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_command(ShipConfig, argv, "python -m models.default_model",
                          "Train the default CLIP recipe (models/recipes/default_clip.json) on the default "
                          "synthetic set and write its fp16 weights and model card into the package.")
    card = ship(config)
    print(json.dumps({"test_zero_shot_auroc": card["test_zero_shot_auroc"], "sha256": card["sha256"]}, indent=2))
    return card


if __name__ == "__main__":
    run_main(main)
