"""Checkpoints: crash-safe saving, weights-only loading, and import of published Mammo-CLIP models.

Loading always uses ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects (OmegaConf configs are read as plain ones, :mod:`models.safe_load`). Our
checkpoints are ``{"format", "config", "model", ...training state}``; Mammo-CLIP's are
``{"model", "optimizer", "scheduler", "config", "epoch", "train_loss"}``, their ``config`` the resolved
Hydra config (``config["model"]`` names the encoders, ``config["base"]`` the input size and
normalization), their state dict keys prefixed
``image_encoder.``, ``text_encoder.text_encoder.``, ``image_projection.``, ``text_projection.`` and a
``logit_scale``; :func:`import_mammo_clip` maps them onto :class:`models.clip.ClipModel`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.clip import ClipConfig, ClipModel
from models.encoders import ImageEncoderConfig, TextEncoderConfig
from models.encoders.static_padding import NOMINAL_SIZES
from models.io import save_torch
from models.safe_load import CheckpointError, load_weights_only

FORMAT = "mammo-interp/clip-1"
MAMMO_CLIP = "mammo-clip"
# Input size for checkpoints that record none: large enough for masses to span several
# feature-map cells of a stride-32 encoder, small enough for CPU.
FALLBACK_INPUT_SIZE = (512, 320)


@dataclass(frozen=True)
class MammoClipEncoder:
    """How one of Mammo-CLIP's image encoder names is rebuilt here."""

    timm_name: str
    pooling: str
    # The "-detect" encoders are EfficientNet-PyTorch networks (keys ``_conv_stem`` ...), padded for
    # their nominal input size at every size; the others wrap a timm model as ``.model``.
    static_same_padding: int = 0


MAMMO_CLIP_ENCODERS: dict[str, MammoClipEncoder] = {
    "tf_efficientnet_b5_ns-detect": MammoClipEncoder("tf_efficientnet_b5", "avg", NOMINAL_SIZES["b5"]),
    "tf_efficientnetv2-detect": MammoClipEncoder("tf_efficientnet_b2", "avg", NOMINAL_SIZES["b2"]),
    "tf_efficientnet_b5_ns": MammoClipEncoder("tf_efficientnet_b5", "gem"),
    "tf_efficientnetv2_s": MammoClipEncoder("tf_efficientnetv2_s", "gem"),
}
# Keys a Mammo-CLIP state dict may carry that have no counterpart here and no effect on embeddings.
_IGNORED_KEYS = ("image_encoder.fc.", "image_encoder._fc.", "text_encoder.text_encoder.embeddings.position_ids")


def _text_weights_are_stock(config: ClipConfig) -> bool:
    """A frozen, pretrained text encoder still has the weights of its local folder."""
    return config.freeze_text and config.text.pretrained


def clip_state(model: ClipModel) -> dict[str, torch.Tensor]:
    """The weights to save: everything, except a frozen stock text encoder (rebuilt from its
    folder on load; it is most of the model's size)."""
    skip = "text_encoder." if _text_weights_are_stock(model.config) else None
    return {k: v for k, v in model.state_dict().items() if skip is None or not k.startswith(skip)}


def restore_clip_state(model: ClipModel, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load :func:`clip_state` output strictly (the omitted stock text weights may be absent)."""
    own = model.state_dict()
    mismatched = sorted(f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
                        for k, v in state.items() if k in own and own[k].shape != v.shape)
    if mismatched:
        raise CheckpointError(f"{source} does not fit the model: shape mismatches {mismatched}")
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if _text_weights_are_stock(model.config):
        missing = [k for k in missing if not k.startswith("text_encoder.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model: missing keys {sorted(missing)}, "
            f"unexpected keys {sorted(unexpected)}"
        )


def save_checkpoint(path: str | Path, model: ClipModel, **state: Any) -> Path:
    """Write ``model``'s weights, its config and extra training ``state`` atomically."""
    return save_torch(path, {"format": FORMAT, "config": model.config.to_dict(), "model": clip_state(model),
                             **state})


def read_weights_file(path: str | Path) -> Any:
    """Any checkpoint kind, read on the CPU without running code from it (:func:`models.safe_load.load_weights_only`:
    tensors, plain containers, and OmegaConf configs as plain lists and dicts).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file pickles other objects (the message names them and the safe options) or is
            not a torch file.
    """
    return load_weights_only(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a CLIP checkpoint (ours or Mammo-CLIP's) with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file holds non-allow-listed objects or is not a checkpoint dict.
    """
    payload = read_weights_file(path)
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: expected a dict with 'config' and 'model' entries")
    return payload


def load_clip(path: str | Path, text_encoder: str | None = None) -> ClipModel:
    """Rebuild a :class:`ClipModel` from our checkpoint or a Mammo-CLIP one (detected).

    Args:
        path: checkpoint file.
        text_encoder: local folder of the text model (config + tokenizer) for Mammo-CLIP imports,
            whose configs name hub models that are not available offline.
    """
    return clip_from_checkpoint(load_checkpoint(path), str(path), text_encoder)


def clip_from_checkpoint(payload: Mapping[str, Any], source: str, text_encoder: str | None = None) -> ClipModel:
    """:func:`load_clip` on a checkpoint already read by :func:`load_checkpoint` (``source`` names
    it in errors), for callers that also need other entries of it."""
    kind = checkpoint_kind(payload)
    if kind == FORMAT:
        saved = ClipConfig.from_dict(payload["config"])
        # The checkpoint holds the image weights; skip loading the encoder's initial weights.
        config = dataclasses.replace(saved, image=dataclasses.replace(saved.image, weights="none"))
        model = ClipModel(config)
        restore_clip_state(model, payload["model"], source)
        return model
    if kind == MAMMO_CLIP:
        return import_mammo_clip(payload, text_encoder, source=source)
    raise CheckpointError(f"{source}: neither a {FORMAT} checkpoint nor a Mammo-CLIP one")


def checkpoint_kind(payload: Any) -> str | None:
    """:data:`FORMAT` for ours, :data:`MAMMO_CLIP` for a Mammo-CLIP checkpoint, else None."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("config"), Mapping):
        return None
    if payload.get("format") == FORMAT:
        return FORMAT
    model = payload["config"].get("model")
    return MAMMO_CLIP if isinstance(model, Mapping) and "image_encoder" in model else None


MIN_INPUT_SIDE = 32  # the backbones downsample 32x: a smaller side leaves no feature-map cell


def check_input_size(requested: Sequence[int], allow_empty: bool = True) -> None:
    """Refuse a requested input size that is neither empty (the checkpoint's own, when
    ``allow_empty``) nor ``H W`` with both sides at least :data:`MIN_INPUT_SIDE` pixels; configs
    call it at parse time, before any data or model is loaded."""
    if not requested and allow_empty:
        return
    if len(requested) != 2:
        raise ValueError(f"image_size needs two numbers (H W), got {list(requested)}")
    if min(requested) < MIN_INPUT_SIDE:
        raise ValueError(f"image_size sides must be at least {MIN_INPUT_SIDE} pixels (H W), got {list(requested)}")


def input_size(payload: Mapping[str, Any], requested: Sequence[int] = ()) -> tuple[int, int]:
    """The input ``(H, W)`` an analysis feeds a checkpoint's model: see :func:`input_size_source`."""
    return input_size_source(payload, requested)[0]


def input_size_source(payload: Mapping[str, Any], requested: Sequence[int] = ()) -> tuple[tuple[int, int], str]:
    """The input ``(H, W)`` and where it comes from: ``requested`` when given, else the size the
    checkpoint was pretrained at (ours record it in ``pretrain_config``, Mammo-CLIP's in its config's
    ``base.image_size_h/w``), else :data:`FALLBACK_INPUT_SIZE`."""
    if requested:
        return (int(requested[0]), int(requested[1])), "requested"
    size = payload.get("pretrain_config", {}).get("image_size")
    if size:
        return (int(size[0]), int(size[1])), "checkpoint pretrain_config.image_size"
    config = payload.get("config")
    base = config.get("base", {}) if isinstance(config, Mapping) else {}
    if isinstance(base, Mapping) and base.get("image_size_h") and base.get("image_size_w"):
        return (int(base["image_size_h"]), int(base["image_size_w"])), "checkpoint config base.image_size_h/w"
    return FALLBACK_INPUT_SIZE, "fallback (the checkpoint records no input size)"


def mammo_clip_image_config(checkpoint_config: Mapping[str, Any]) -> ImageEncoderConfig:
    """Our image encoder for a Mammo-CLIP ``config`` dict: the architecture, its padding, and the
    intensity normalization its training used (``base.mean/std``; ours where the config has none)."""
    name = checkpoint_config["model"]["image_encoder"]["name"]
    encoder = MAMMO_CLIP_ENCODERS.get(name, MammoClipEncoder(name, "avg"))
    base = checkpoint_config.get("base") or {}
    normalization = {key: float(base[key]) for key in ("mean", "std") if base.get(key) is not None}
    return ImageEncoderConfig(name=encoder.timm_name, weights="none", pooling=encoder.pooling,
                              static_same_padding=encoder.static_same_padding, **normalization)


def checkpoint_input(path: str | Path, requested: Sequence[int] = ()) -> dict[str, Any]:
    """What a run feeds the CLIP checkpoint at ``path``, for its run record: the input size and where
    it came from (:func:`input_size_source`), the intensity normalization and any static padding;
    empty when the file is not a readable CLIP checkpoint (the command itself then says why)."""
    try:
        payload = read_weights_file(path)
    except CheckpointError:
        return {}
    kind = checkpoint_kind(payload)
    if kind is None:
        return {}
    size, source = input_size_source(payload, requested)
    image = ClipConfig.from_dict(payload["config"]).image if kind == FORMAT else mammo_clip_image_config(
        payload["config"])
    return {"image_size": list(size), "image_size_from": source, "mean": image.mean, "std": image.std,
            "static_same_padding": image.static_same_padding}


def mammo_clip_config(checkpoint_config: Mapping[str, Any], text_encoder: str) -> ClipConfig:
    """Our :class:`ClipConfig` for a Mammo-CLIP ``config`` dict."""
    model = checkpoint_config["model"]
    head = model.get("projection_head", {"name": "linear", "proj_dim": 512, "dropout": 0.0})
    if head["name"].lower() not in ("linear", "mlp"):
        raise CheckpointError(f"unknown Mammo-CLIP projection head {head['name']!r}")
    return ClipConfig(
        image=mammo_clip_image_config(checkpoint_config),
        text=TextEncoderConfig(name=text_encoder, pooling=_text_pooling(model["text_encoder"]),
                               pretrained=False),
        embed_dim=int(head["proj_dim"]),
        projection_layers=1,
        projection_kind="residual" if head["name"].lower() == "mlp" else "mlp",
        projection_dropout=float(head.get("dropout", 0.0)),
        temperature=float(model.get("temperature", 0.07)),
    )


def _text_pooling(text_config: Mapping[str, Any]) -> str:
    pooling = text_config.get("pooling", "eos")
    return "cls" if pooling == "bos" else pooling


def import_mammo_clip(
    checkpoint: Mapping[str, Any], text_encoder: str | None = None, source: str = "checkpoint"
) -> ClipModel:
    """Build a :class:`ClipModel` from a Mammo-CLIP checkpoint dict (``config`` + ``model``).

    Raises:
        CheckpointError: a text encoder folder is needed, or keys are missing/unexpected after
            mapping (both lists are in the message).
    """
    text_config = checkpoint["config"]["model"]["text_encoder"]
    text_encoder = text_encoder or text_config.get("name", "")
    if not Path(text_encoder).is_dir():
        raise CheckpointError(
            f"{source}: its text encoder {text_config.get('name')!r} must be a local folder "
            "(config + tokenizer, e.g. a downloaded Bio_ClinicalBERT); pass text_encoder=PATH"
        )
    model = ClipModel(mammo_clip_config(checkpoint["config"], text_encoder))
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith(_IGNORED_KEYS)}
    image_state = {}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("image_encoder."):
            name = key.removeprefix("image_encoder.")
            image_state[name.removeprefix("model.")] = value
        elif key.startswith("text_encoder.text_encoder."):
            mapped["text_encoder.model." + key.removeprefix("text_encoder.text_encoder.")] = value
        elif key.startswith(("image_projection.", "text_projection.")) and model.config.projection_kind == "mlp":
            head, rest = key.split(".", 1)
            mapped[f"{head}.mlp.0.{rest.removeprefix('projection.')}"] = value
        elif key == "logit_scale":
            mapped["log_logit_scale"] = value.reshape(())
        else:
            mapped[key] = value
    try:
        model.image_encoder.load_backbone_state(image_state, source=f"{source} image_encoder")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    expected = {k for k in model.state_dict() if not k.startswith("image_encoder.")}
    missing = sorted(expected - set(mapped))
    unexpected = sorted(set(mapped) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source} is not a Mammo-CLIP checkpoint this importer understands: missing keys "
            f"{missing}, unexpected keys {unexpected}"
        )
    model.load_state_dict({**model.state_dict(), **mapped})
    return model
