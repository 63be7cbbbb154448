"""Attribution methods for a user's own model: the model at construction, the data at call (captum's shape).

Every method's ``attribute(images, target, masks=None)`` maps ``(N, C, H, W)`` images (what the
model takes) to ``(N, H, W)`` float32 heatmaps at the image size, min-max normalized to [0, 1]
inside ``masks`` (``(N, H, W)`` bool; default the whole image, :func:`breast_masks` the tissue) and
0 outside. The *target* says what is explained:

- a ``(D,)`` text embedding: the cosine between the image embedding and it (CLIP zero-shot). The
  model is then a CLIP model with ``encode_image`` (open_clip's convention) or a module whose
  forward gives ``(N, D)`` image embeddings;
- an ``int``: that logit of a classifier giving ``(N, K)``;
- a function of the model's output ``model(images)`` giving one score per image ``(N,)``
  (pytorch-grad-cam's callable targets, batched), e.g. ``lambda logits: logits[:, 1] - logits[:, 0]``.

``layer`` is the module whose output is the feature map (``(N, C, h, w)``), as in captum's
``LayerGradCam``; in a vision transformer, :func:`~mammo_interp.adapters.vit_layer` gives a block's
patch tokens on their grid (:class:`~models.encoders.tokens.TokenMaps`), and
:class:`~mammo_interp.adapters.ImageEmbedding` makes an open_clip or Hugging Face CLIP the model. Methods run where the model is: put it on a GPU (``model.to("cuda")``) and pass
images from anywhere; they are moved to the model's device batch by batch, and heatmaps come back
on the CPU. Boxes come from heatmaps by one rule (:class:`~mammo_interp.boxes.BoxRule`)
and are scored with :func:`~mammo_interp.metrics.box_metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from mammo_interp import heatmaps as hm
from mammo_interp.features import breast_mask
from mammo_interp.mapper import ChannelMapper, MapperConfig, train_mapper
from mammo_interp import methods as registry
from mammo_interp.methods import MethodContext
from mammo_interp.methods import channels as weighting
from models.device import module_device
from models.encoders.tokens import attached
from models.training import eval_mode

Target = torch.Tensor | int | Callable[[torch.Tensor], torch.Tensor]


def breast_masks(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool tissue masks of preprocessed ``(N, C, H, W)`` images in [0, 1] (first channel;
    bright = dense), by the rule the dataset's breast crop uses."""
    return torch.from_numpy(np.stack([breast_mask(image[0].numpy()) for image in images.detach().cpu()]))


def target_module(model: nn.Module, target: Target) -> nn.Module:
    """The scalar-per-image function a gradient method differentiates (see the module docstring)."""
    if isinstance(target, int):
        return hm.LogitTarget(model, target)
    if callable(target) and not isinstance(target, torch.Tensor):
        return hm.OutputTarget(model, target)
    if not isinstance(target, torch.Tensor) or target.ndim != 1:
        raise ValueError(f"target must be a (D,) text embedding, a class index or a function of the model's "
                         f"output; got {type(target).__name__}"
                         f"{tuple(target.shape) if isinstance(target, torch.Tensor) else ''}")
    return hm.SimilarityTarget(model, target)


def _masks(images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    if masks is None:
        return torch.ones(len(images), *images.shape[2:], dtype=torch.bool)
    masks = torch.as_tensor(masks, dtype=torch.bool)
    if masks.shape != (len(images), *images.shape[2:]):
        raise ValueError(f"masks must be (N, H, W) = {(len(images), *images.shape[2:])}; got {tuple(masks.shape)}")
    return masks


class _Captured(Exception):
    """Raised by the layer hook once the feature map is in hand, so the forward stops there."""


class LayerFeatures:
    """``(N, C, H, W)`` images -> ``(N, C, h, w)`` output of ``layer`` in ``model`` (eval mode, no
    gradients; the forward stops at the layer)."""

    def __init__(self, model: nn.Module, layer: nn.Module, batch_size: int = 32) -> None:
        self.model, self.layer, self.batch_size = model, layer, batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._one_batch(images[i:i + self.batch_size])
                          for i in range(0, len(images), self.batch_size)])

    def _one_batch(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            captured.append(output.detach().cpu())
            raise _Captured

        handle = self.layer.register_forward_hook(hook)
        try:
            with eval_mode(self.model), attached(self.layer):
                embed = getattr(self.model, "encode_image", self.model)
                embed(images.to(module_device(self.model)))
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError("the layer never ran in the model's forward: is it a module of this model?")
        return captured[0]


class _ChannelMethod:
    """A heatmap that weights the channels of one layer's feature map (FActOR and its baselines)."""

    def __init__(self, model: nn.Module, layer: nn.Module, batch_size: int = 32) -> None:
        self.features = LayerFeatures(model, layer, batch_size)

    def weights(self, maps: torch.Tensor, target: Target | None) -> torch.Tensor:
        raise NotImplementedError

    def attribute(self, images: torch.Tensor, target: Target | None = None,
                  masks: torch.Tensor | None = None) -> torch.Tensor:
        masks = _masks(images, masks)
        maps = self.features(images)
        return hm.channel_heatmaps(maps, self.weights(maps, target), masks)


class Factor(_ChannelMethod):
    """Mammo-FActOR: per image, the ``top_k`` channels whose mapped embeddings align best with the
    text embedding, summed with their cosines as weights.

    :meth:`fit` trains the channel mapper (multiple-instance contrastive, early-stopped on the
    validation images); or pass a trained ``mapper``.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, top_k: int = 3, mapper: ChannelMapper | None = None,
                 config: MapperConfig = MapperConfig(), seed: int = 0, batch_size: int = 32,
                 progress: bool = False) -> None:
        super().__init__(model, layer, batch_size)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.top_k, self.mapper, self.config, self.seed, self.progress = top_k, mapper, config, seed, progress
        self.history: list[dict[str, Any]] = []

    def fit(self, images: torch.Tensor, labels: Sequence[bool] | np.ndarray, val_images: torch.Tensor,
            val_labels: Sequence[bool] | np.ndarray, target: torch.Tensor) -> Factor:
        """Train the mapper for one attribute: ``labels`` say which images show it (image level, no boxes)."""
        self.mapper, self.history = train_mapper(
            self.features(images), np.asarray(labels, dtype=bool), self.features(val_images),
            np.asarray(val_labels, dtype=bool), target, self.config, self.seed, self.progress)
        return self

    def weights(self, maps: torch.Tensor, target: Target | None) -> torch.Tensor:
        if self.mapper is None:
            raise RuntimeError("Factor has no channel mapper: call fit(...) or pass mapper=")
        if not isinstance(target, torch.Tensor):
            raise ValueError("FActOR's target is the attribute's (D,) text embedding")
        return weighting.factor_weights(self.mapper, maps, target, self.top_k)


class ChannelBaseline(_ChannelMethod):
    """FActOR's controls at the same layer: ``"mean"`` of all channels, ``k`` ``"random"`` channels
    per image (seeded: chance level), or one fixed channel index (e.g. the box-chosen oracle).
    The target is ignored."""

    def __init__(self, model: nn.Module, layer: nn.Module, channels: str | int = "mean", k: int = 3,
                 seed: int = 0, batch_size: int = 32) -> None:
        super().__init__(model, layer, batch_size)
        if not isinstance(channels, int) and channels not in ("mean", "random"):
            raise ValueError(f"channels must be 'mean', 'random' or a channel index; got {channels!r}")
        self.channels, self.k, self.seed = channels, k, seed

    def weights(self, maps: torch.Tensor, target: Target | None) -> torch.Tensor:
        n, channels = maps.shape[:2]
        if self.channels == "mean":
            return weighting.mean_weights(n, channels)
        if self.channels == "random":
            return weighting.random_weights(n, channels, self.k, self.seed)
        if not 0 <= self.channels < channels:
            raise ValueError(f"channel {self.channels} is not in the layer's {channels} channels")
        return weighting.single_channel_weights(n, channels, self.channels)


class Attribution:
    """Any registered method (:mod:`mammo_interp.methods`: ``"layercam"``, ``"gscorecam"``, a
    method of your own, ...) by name. ``options`` are :class:`~mammo_interp.methods.MethodContext`
    fields (``ig_steps``, ``cam_channels``, ``top_k``, ``mapper`` for FActOR, ...); ``batch_size``
    images go through the model at once (default: the method's). The target is passed at call."""

    def __init__(self, model: nn.Module | None, layer: nn.Module | None, method: str,
                 batch_size: int | None = None, **options: Any) -> None:
        self.model, self.layer, self.context = model, layer, MethodContext(**options)
        registry.check((method,), "method", has=self.context.provides())  # e.g. FActOR without mapper=
        chosen = registry.get(method)
        self.method = chosen if batch_size is None else replace(chosen, batch_size=batch_size)

    def attribute(self, images: torch.Tensor, target: Target | None = None, masks: torch.Tensor | None = None,
                  normalize: bool = True) -> torch.Tensor:
        """``(N, H, W)`` heatmaps in [0, 1] (module doc); ``normalize=False``: the method's raw maps
        at its own resolution (the layer's ``(N, h, w)`` for CAMs and channel methods, the image's
        for pixel methods), neither upsampled nor normalized, ``masks`` unused."""
        masks, method = _masks(images, masks), self.method
        if method.kind == "mask":
            return hm.mask_heatmaps(method, masks) if normalize else method.mask_maps(masks)
        context = replace(self.context, text_embedding=target) if isinstance(target, torch.Tensor) else self.context
        if method.kind == "channel":
            maps = LayerFeatures(self.model, self.layer)(images)
            if normalize:
                return hm.feature_heatmaps(method, context, maps, masks)
            return hm.weighted_channels(maps, method.channel_weights(context, maps).to(maps.device))
        scored, batch = target_module(self.model, target), lambda part: images[part]
        if not normalize:
            return _warn_if_blank(method, hm.model_maps(method, context, scored, self.layer, batch, len(images)))
        return _warn_if_blank(method, hm.model_heatmaps(method, context, scored, self.layer, batch, len(images),
                                                        masks))


def _warn_if_blank(method: registry.Method, maps: torch.Tensor) -> torch.Tensor:
    """``maps``, with a warning where every one is 0: the score does not depend on the layer's output."""
    if len(maps) and not maps.any():
        warnings.warn(f"{method.label} gave an all-zero map for every image: the target's score does not depend on "
                      "this layer's output (a ViT's last block under a class-token embedding: take the block "
                      "before it, mammo_interp.vit_layer(model, -2))", stacklevel=3)
    return maps


class GradCam(Attribution):
    """Grad-CAM (captum ``LayerGradCam``: ReLU of the gradient-weighted channel sum) at ``layer``."""

    def __init__(self, model: nn.Module, layer: nn.Module, batch_size: int = 16) -> None:
        super().__init__(model, layer, "gradcam", batch_size)


class IntegratedGradients(Attribution):
    """Integrated Gradients (captum) from a black image, ``|attribution|`` smoothed by a Gaussian of
    ``sigma`` pixels, ``steps`` interpolation points."""

    def __init__(self, model: nn.Module, steps: int = 8, sigma: float = 4.0, batch_size: int = 2) -> None:
        super().__init__(model, None, "integrated_gradients", batch_size, ig_steps=steps, ig_sigma=sigma)


class BreastPrior(Attribution):
    """No model: the distance to the tissue's edge, a centre-of-breast prior that knows no lesion;
    every localization table's floor. Needs ``masks``."""

    def __init__(self) -> None:
        super().__init__(None, None, "breast_prior")
