"""Map EfficientNet-PyTorch state dicts (``_conv_stem``, ``_blocks.N._bn1``...) onto timm models.

The offline ImageNet EfficientNet-Lite0 weights and Mammo-CLIP's ``*-detect`` image encoders use the
EfficientNet-PyTorch key names. Both libraries register a block's layers in the same order (expand
conv, BN, depthwise conv, BN, SE reduce/expand, project conv, BN), so the backbone tensors pair up one
to one in order; every pair is checked for equal shape so a wrong architecture fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Classifier tensors of EfficientNet-PyTorch; our encoders have no classifier.
_CLASSIFIER_PREFIXES = ("_fc.",)


def is_efficientnet_pytorch(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state_dict`` uses EfficientNet-PyTorch key names."""
    return "_conv_stem.weight" in state_dict


def map_efficientnet_pytorch(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` (EfficientNet-PyTorch keys) to the keys of ``target`` (a timm state dict).

    Raises:
        ValueError: the tensor counts differ, or a pair's shapes differ (names both keys), except a
            stem whose input channels differ (handled by the caller's channel adaptation).
    """
    tensors = [(k, v) for k, v in source.items() if not k.startswith(_CLASSIFIER_PREFIXES)]
    names = list(target)
    if len(tensors) != len(names):
        raise ValueError(
            f"EfficientNet-PyTorch weights have {len(tensors)} backbone tensors but the timm model "
            f"has {len(names)}: they are different architectures"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (key, value), name in zip(tensors, names):
        expected = tuple(target[name].shape)
        stem_channels_only = key == "_conv_stem.weight" and value.shape[0] == expected[0]
        if tuple(value.shape) != expected and not stem_channels_only:
            raise ValueError(
                f"shape mismatch mapping {key!r} {tuple(value.shape)} onto {name!r} {expected}: "
                "the checkpoint is not this timm architecture"
            )
        mapped[name] = value
    return mapped
