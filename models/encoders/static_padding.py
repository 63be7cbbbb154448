"""TensorFlow "same" padding fixed for one nominal input size, as EfficientNet-PyTorch pads.

timm's ``tf_`` EfficientNets pad their strided convolutions for the input they are given; the
EfficientNet-PyTorch library (Mammo-CLIP's image encoder) computes that padding once, for the
architecture's nominal size (260 px for B2, 456 px for B5), and keeps it at every input size. The
two agree only where each strided convolution's input has the same parity in both; at 1520 x 912 one
(B5) or two (B2) convolutions pad differently, and the feature maps of the same weights differ.
:func:`fix_same_padding` turns a timm model into the EfficientNet-PyTorch network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from torch import nn

# Nominal input sides of EfficientNet-PyTorch's architectures (its ``efficientnet_params``).
NOMINAL_SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}


class Conv2dStaticSame(nn.Conv2d):
    """A convolution padded by a fixed ``(left, right, top, bottom)``, whatever the input size.

    Its parameters are named as :class:`timm.layers.Conv2dSame`'s (``weight``, ``bias``), so state
    dicts load unchanged.
    """

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.pad = tuple(int(p) for p in pad)
        self.load_state_dict(conv.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, static pad={self.pad}"


def _same_pad(size: tuple[int, int], conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """``F.pad`` order ``(left, right, top, bottom)`` of TensorFlow "same" padding at ``size`` (H, W)."""
    pad_h, pad_w = (get_same_padding(size[i], conv.kernel_size[i], conv.stride[i], conv.dilation[i]) for i in (0, 1))
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def fix_same_padding(model: nn.Module, nominal_size: int) -> int:
    """Replace every dynamically padded convolution of ``model`` by one padded for ``nominal_size``.

    With "same" padding a convolution's output side is ``ceil(input / stride)``, so the side each
    strided convolution sees at the nominal input follows from the strides before it (timm registers a
    CNN's modules in forward order). Returns how many convolutions were fixed.

    Raises:
        ValueError: ``model`` has no dynamically padded convolution (not a TensorFlow-"same" model).
    """
    size = (nominal_size, nominal_size)
    replacements: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, Conv2dSame):
            replacements.append((name, Conv2dStaticSame(module, _same_pad(size, module))))
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1:
            size = (math.ceil(size[0] / module.stride[0]), math.ceil(size[1] / module.stride[1]))
    if not replacements:
        raise ValueError("static same padding needs a timm model with TensorFlow 'same' padding (a 'tf_' model); "
                         "this one pads statically already")
    for name, replacement in replacements:
        model.set_submodule(name, replacement)
    return len(replacements)

