"""Other projects' CLIP models as the Python API takes them: an image tower giving ``(N, D)`` embeddings
and a layer whose output is an ``(N, C, h, w)`` feature map.

- :class:`ImageEmbedding`: open_clip (``encode_image``), Hugging Face ``CLIPModel``
  (``get_image_features``, position embeddings interpolated to the input size), this project's models,
  or any module whose forward gives embeddings; grayscale mammograms repeated over the channels the
  tower expects and normalized with its statistics.
- :func:`vit_layer`: a ViT block of a timm, open_clip or Hugging Face vision transformer as a
  :class:`~models.encoders.tokens.TokenMaps` (patch tokens on their grid; class and register tokens dropped).

CNN towers need no adapter for the layer: pass the module (e.g. ``model.visual.trunk.stages[-1]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.encoders.tokens import TokenMaps


class ImageEmbedding(nn.Module):
    """``(N, C, H, W)`` images in [0, 1] -> ``(N, D)`` image embeddings of any CLIP model (module doc).

    Args:
        model: the CLIP model (or its image tower).
        channels: channels the tower takes; a 1-channel image is repeated to fill them (None: as given).
        mean, std: the tower's input normalization, per channel or one value (None: images as given).
    """

    def __init__(self, model: nn.Module, channels: int | None = None, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.model, self.channels = model, channels
        statistics = [torch.as_tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) if v is not None else None
                      for v in (mean, std)]
        if (statistics[0] is None) != (statistics[1] is None):
            raise ValueError("give both mean and std, or neither")
        self.normalization = statistics if statistics[0] is not None else None
        self.train(model.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels is not None and images.shape[1] != self.channels:
            if images.shape[1] != 1:
                raise ValueError(f"the tower takes {self.channels} channels; got {images.shape[1]}, not 1 to repeat")
            images = images.expand(-1, self.channels, -1, -1)
        if self.normalization is not None:
            mean, std = (v.to(images.device) for v in self.normalization)
            images = (images - mean) / std
        if hasattr(self.model, "get_image_features"):  # Hugging Face: a ModelOutput in transformers >= 5
            output = self.model.get_image_features(pixel_values=images, interpolate_pos_encoding=True)
            return output if isinstance(output, torch.Tensor) else output.pooler_output
        return getattr(self.model, "encode_image", self.model)(images)


def vit_layer(model: nn.Module, block: int = -2) -> TokenMaps:
    """Block ``block`` of a vision transformer as an ``(N, C, h, w)`` feature layer: a timm
    ``VisionTransformer``, an open_clip CLIP (or its ``visual``), or a Hugging Face ``CLIPModel`` (or its
    ``vision_model``). Methods attach it while they run; the model's outputs are unchanged.

    The default is the last block but one: where the embedding is the class token, the last block's patch
    tokens never reach it, so their gradients, and every gradient CAM there, are zero (pytorch-grad-cam
    takes the last block's first norm, which reads the same tokens)."""
    tower = getattr(model, "visual", None) or getattr(model, "vision_model", None) or model
    if hasattr(tower, "patch_embed") and hasattr(tower, "blocks"):  # timm
        return TokenMaps(tower.blocks[block], tower.patch_embed.proj, tower.num_prefix_tokens)
    if hasattr(tower, "conv1") and hasattr(tower, "transformer"):  # open_clip
        return TokenMaps(tower.transformer.resblocks[block], tower.conv1, 1,
                         getattr(tower.transformer, "batch_first", True))
    if hasattr(tower, "embeddings") and hasattr(tower, "encoder"):  # Hugging Face CLIP
        return TokenMaps(tower.encoder.layers[block], tower.embeddings.patch_embedding, 1)
    raise ValueError(f"{type(model).__name__} is not a timm, open_clip or Hugging Face vision transformer: build "
                     "a TokenMaps(block, patch_embedding, prefix_tokens) for it")
