"""Checkpoints in the exact structure Mammo-CLIP's training code saves, built from facts about it (no code of its).

Mammo-CLIP composes a Hydra config, resolves it with ``OmegaConf.resolve``, converts the ``DictConfig``
nodes (only those) to dicts, and saves ``{"model", "optimizer", "scheduler", "config", "epoch",
"train_loss"}``: lists in the config stay OmegaConf ``ListConfig`` objects. Its "-detect" image
encoders are EfficientNet-PyTorch B2/B5 networks without the classifier; the library itself
(``efficientnet_pytorch``) serves as the oracle network here. BatchNorm statistics are recalibrated on
image-like inputs so that activations are realistic (fresh statistics hide padding differences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModel

ENCODER_NAMES = {"b2": "tf_efficientnetv2-detect", "b5": "tf_efficientnet_b5_ns-detect"}
MEAN, STD = 0.3089279, 0.25053555408335154  # their base.mean/std
PROJECTION_DIM = 512
TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"  # the hub name their configs hold; users pass a local folder


def image_like(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``(n, 1, H, W)`` smooth intensity fields in [0, 1] (blurred noise over a gradient): image-like
    local statistics at any size."""
    generator = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.rand(n, 1, height, width, generator=generator), 5, 1, 2)
    ramp = torch.linspace(0, 1, width).expand(n, 1, height, width)
    return (0.7 * noise + 0.3 * ramp).clamp(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Their input: min-max scaled gray, normalized by base.mean/std, repeated over RGB."""
    return ((images - MEAN) / STD).repeat(1, 3, 1, 1)


def oracle_network(variant: str, seed: int = 0) -> EfficientNet:
    """EfficientNet-PyTorch ``efficientnet-{variant}`` in eval mode, its BatchNorm statistics measured
    on image-like inputs."""
    torch.manual_seed(seed)
    network = EfficientNet.from_name(f"efficientnet-{variant}", num_classes=1)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    network.train()
    with torch.no_grad():
        for batch in range(2):
            network(normalize(image_like(8, 192, 120, seed=100 + batch)))
    return network.eval()


def config_of_a_mammo_clip_run(variant: str, image_size: tuple[int, int]) -> dict:
    """The saved ``config``: their composed config after ``OmegaConf.resolve`` and a DictConfig-only
    conversion, so the lists inside are still ``ListConfig`` objects."""
    config = OmegaConf.create({
        "base": {"data_dir": "/data", "period": "n", "fold": 0, "seed": 10, "amp": True,
                 "mean": MEAN, "std": STD, "image_size_h": image_size[0], "image_size_w": image_size[1],
                 "text_max_length": 256, "loss_best": "contrastive", "data_frac": 1.0,
                 "zs_prompts": {"upmc": ["birads category 0", "birads category 1", "birads category 2"],
                                "rsna": ["no malignancy", "malignancy"]},
                 "output": {"checkpoint": "/runs/checkpoints/", "tensorboard": "/runs/tensorboard/"}},
        "data_train": {"upmc": {"name": "upmc", "data_type": "image_text",
                                "data_path": "${base.data_dir}/upmc.csv", "view_column": ["CC", "MLO"]}},
        "dataloader": {"train": {"batch_size": 6, "num_workers": 4, "shuffle": True, "drop_last": True}},
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": TEXT_ENCODER},
        "transform": {split: {"Resize": {"size_h": "${base.image_size_h}", "size_w": "${base.image_size_w}"},
                              **({"transform": {"affine_transform_degree": 20, "affine_translate_percent": 0.1,
                                                "affine_scale": [0.8, 1.2], "affine_shear": 20,
                                                "elastic_transform_alpha": 10, "elastic_transform_sigma": 15,
                                                "p": 1.0}} if split == "train" else {})}
                      for split in ("train", "valid", "test")},
        "model": {"name": "clip_custom", "temperature": 0.07,
                  "image_encoder": {"source": "cnn", "name": ENCODER_NAMES[variant], "pretrained": True,
                                    "model_type": "cnn"},
                  "text_encoder": {"source": "huggingface", "name": TEXT_ENCODER, "pretrained": True,
                                   "gradient_checkpointing": False, "pooling": "eos",
                                   "cache_dir": "${base.data_dir}/huggingface/", "trust_remote_code": True,
                                   "mlm_head": True},
                  "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": PROJECTION_DIM}},
        "optimizer": {"name": "adamw", "config": {"lr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 1e-4}},
        "scheduler": {"name": "cosine", "config": {"total_epochs": 10, "warmup_epochs": 1}},
        "loss": {"breast_clip": {"loss_ratio": 1.0, "label_smoothing": 0.0}},
    })
    OmegaConf.resolve(config)
    return _dictconfigs_only(config)


def _dictconfigs_only(node):
    return {key: _dictconfigs_only(value) for key, value in node.items()} if isinstance(node, DictConfig) else node


@dataclass
class MammoClipFile:
    """A written Mammo-CLIP-format checkpoint and the networks it was made from."""

    path: Path
    oracle: EfficientNet  # the image encoder, as Mammo-CLIP runs it
    image_projection: torch.nn.Linear

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Mammo-CLIP's normalized image embeddings of ``(B, 1, H, W)`` images in [0, 1]."""
        with torch.no_grad():
            pooled = self.oracle.extract_features(normalize(images)).mean(dim=(2, 3))
            return F.normalize(self.image_projection(pooled), dim=-1)


def write_mammo_clip_checkpoint(path: Path, variant: str, text_encoder: str,
                                image_size: tuple[int, int] = (1520, 912)) -> MammoClipFile:
    """Save a Mammo-CLIP-format ``variant`` ('b2' or 'b5') checkpoint holding the BERT weights of the local
    folder ``text_encoder`` (its config names Bio_ClinicalBERT, as theirs do)."""
    oracle = oracle_network(variant)
    text = AutoModel.from_pretrained(text_encoder)
    torch.manual_seed(1)
    projections = {"image_projection": torch.nn.Linear(oracle._conv_head.out_channels, PROJECTION_DIM),
                   "text_projection": torch.nn.Linear(text.config.hidden_size, PROJECTION_DIM)}
    state = {f"image_encoder.{k}": v for k, v in oracle.state_dict().items() if not k.startswith("_fc.")}
    state.update({f"text_encoder.text_encoder.{k}": v for k, v in text.state_dict().items()})
    for name, head in projections.items():
        state.update({f"{name}.projection.{k}": v for k, v in head.state_dict().items()})
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    trained = list(projections["image_projection"].parameters())
    optimizer = torch.optim.AdamW(trained, lr=5e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))
    trained[0].sum().backward()
    optimizer.step()
    scheduler.step()
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "config": config_of_a_mammo_clip_run(variant, image_size), "epoch": 7,
                "train_loss": torch.tensor(2.25)}, path)
    return MammoClipFile(path, oracle, projections["image_projection"].eval())
