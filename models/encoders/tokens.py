"""A vision transformer's patch tokens seen as a feature map, so every CNN method runs on a ViT.

Feature-map methods (channel weights, Grad-CAM's mean gradient per channel, FActOR's mapper) take
``(N, C, h, w)`` maps; a ViT block gives ``(N, P + T, C)`` tokens: ``P`` prefix tokens (class, register
and distillation tokens) and ``T = h * w`` patch tokens in row-major order. :class:`TokenMaps` is the
module to hand them as the layer: attached, it reroutes the block's output through itself as
``(N, C, h, w)`` and back, value for value, so forward hooks on it (captum, pytorch-grad-cam, this
project's hooks) see a feature map and gradients reach the block through it. The grid ``(h, w)`` is read
off the patch embedding's own output on every forward, so any input size the model accepts works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn


def tokens_to_maps(tokens: torch.Tensor, prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(N, P + h*w, C)`` tokens -> ``(N, C, h, w)`` maps of the patch tokens (the ``P`` prefix dropped)."""
    patches = tokens[:, prefix_tokens:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens after {prefix_tokens} prefix token(s) do not fill the "
                         f"{grid[0]} x {grid[1]} patch grid: is prefix_tokens right for this model?")
    return patches.transpose(1, 2).reshape(len(tokens), -1, *grid)


class TokenMaps(nn.Module):
    """``layer``'s patch tokens as an ``(N, C, h, w)`` feature map (an identity module; see the module doc).

    Args:
        layer: the transformer block (or final norm) whose output ``(N, P + T, C)`` is explained; an output
            tuple's first element is taken (Hugging Face blocks).
        patch_embedding: the module that turns images into ``(N, C, h, w)`` patch embeddings (timm
            ``patch_embed.proj``, open_clip ``visual.conv1``, Hugging Face ``embeddings.patch_embedding``).
        prefix_tokens: class, register and distillation tokens before the patches.
        batch_first: False where the block gives ``(P + T, N, C)`` (older open_clip).
    """

    def __init__(self, layer: nn.Module, patch_embedding: nn.Module, prefix_tokens: int = 1,
                 batch_first: bool = True) -> None:
        super().__init__()
        # plain attributes: not submodules, so the encoder's state dict and .to() see them once, where they live
        self.__dict__["layer"], self.__dict__["patch_embedding"] = layer, patch_embedding
        self.prefix_tokens, self.batch_first = prefix_tokens, batch_first
        self._grid: tuple[int, int] | None = None
        self._handles: list[Any] = []

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps

    def attach(self) -> TokenMaps:
        """Reroute ``layer``'s output through this module (once; :meth:`detach` undoes it)."""
        if not self._handles:
            self._handles = [self.patch_embedding.register_forward_hook(self._read_grid),
                             self.layer.register_forward_hook(self._reroute)]
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextmanager
    def attached(self) -> Iterator[TokenMaps]:
        """Attached for a block of code (left as found: one attached before stays attached)."""
        was_attached = bool(self._handles)
        self.attach()
        try:
            yield self
        finally:
            if not was_attached:
                self.detach()

    def _read_grid(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._grid = (int(output.shape[-2]), int(output.shape[-1]))

    def _reroute(self, module: nn.Module, args: Any, output: Any) -> Any:
        tokens = output[0] if isinstance(output, tuple) else output
        if self._grid is None:
            raise RuntimeError("the patch embedding did not run before the layer: is it this model's?")
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        maps = self(tokens_to_maps(tokens, self.prefix_tokens, self._grid))
        rebuilt = torch.cat([tokens[:, :self.prefix_tokens], maps.flatten(2).transpose(1, 2)], dim=1)
        if not self.batch_first:
            rebuilt = rebuilt.transpose(0, 1)
        return (rebuilt, *output[1:]) if isinstance(output, tuple) else rebuilt


def attached(layer: nn.Module | None) -> AbstractContextManager:
    """``layer.attached()`` for a :class:`TokenMaps`; nothing to do for any other layer (or none)."""
    return layer.attached() if isinstance(layer, TokenMaps) else nullcontext()
