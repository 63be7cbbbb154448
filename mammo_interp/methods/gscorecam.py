"""gScoreCAM (Chen et al., ACCV 2022) on pytorch-grad-cam's ``BaseCAM``: Score-CAM over the channels
of largest gradient, the CAM designed for CLIP. A module of its own because pytorch-grad-cam
imports pyplot, which the method registry does not (it is imported on first use).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn


class GScoreCAM(BaseCAM):
    """Score-CAM restricted to the ``top_k`` channels of largest mean gradient. Each kept
    channel's activation, upsampled and min-max normalized, masks the image; the masked images'
    scores times ``logit_scale`` go through a softmax over the kept channels to give their weights
    (the others get 0). Cost: ``top_k`` extra forwards per image.
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], top_k: int = 16,
                 logit_scale: float = 100.0, batch_size: int = 16) -> None:
        super().__init__(model, target_layers, uses_gradients=True)
        self.top_k, self.logit_scale, self.batch_size = top_k, logit_scale, batch_size

    def get_cam_weights(self, input_tensor: torch.Tensor, target_layer: nn.Module, targets: list,
                        activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        importance = grads.mean(axis=(2, 3))
        weights = np.zeros_like(importance)
        with torch.no_grad():
            for b, target in enumerate(targets):
                channels = np.argsort(-importance[b], kind="stable")[:self.top_k]
                kept = torch.from_numpy(activations[b:b + 1, channels]).to(self.device)
                masks = F.interpolate(kept, size=tuple(input_tensor.shape[-2:]), mode="bilinear",
                                      align_corners=True)[0]  # as pytorch-grad-cam's Score-CAM
                low, high = masks.amin(dim=(1, 2), keepdim=True), masks.amax(dim=(1, 2), keepdim=True)
                masked = input_tensor[b:b + 1] * ((masks - low) / (high - low + 1e-8))[:, None]
                scores = torch.cat([torch.stack([target(o) for o in self.model(masked[i:i + self.batch_size])])
                                    for i in range(0, len(channels), self.batch_size)])
                weights[b, channels] = torch.softmax(scores.float() * self.logit_scale, dim=0).cpu().numpy()
        return weights
