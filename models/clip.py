"""CLIP models for mammography: image + text encoders, projection heads, learnable temperature, and
breast/exam-level wrappers that pool up to four views.

Layout follows MMG-CLIP/Mammo-CLIP (seeds 001/003): projections to a shared space (1-3 layer MLP,
or Mammo-CLIP's residual head), logit scale initialised to 1/0.07, optional frozen encoders. The
config is data (:class:`ClipConfig`), saved with every checkpoint so the model can be rebuilt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.encoders import ImageEncoder, ImageEncoderConfig, TextEncoder, TextEncoderConfig
from models.errors import check_choice
from models.text import attribute_sentences
from models.training import eval_mode

PROJECTION_KINDS = ("mlp", "residual")
VIEW_POOLINGS = ("mean", "attention")


@dataclass(frozen=True)
class ClipConfig:
    """Everything needed to rebuild a :class:`ClipModel` (without its weights)."""

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig,
                                      metadata={"help": "image encoder"})
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig, metadata={"help": "text encoder"})
    embed_dim: int = field(default=512, metadata={"help": "joint embedding size"})
    projection_layers: int = field(default=2, metadata={"help": "projection head depth, 1-3"})
    projection_kind: str = field(
        default="mlp", metadata={"help": f"{PROJECTION_KINDS}: ReLU MLP, or Mammo-CLIP's residual head"}
    )
    projection_dropout: float = field(default=0.2, metadata={"help": "dropout in projection heads"})
    temperature: float = field(default=0.07, metadata={"help": "initial softmax temperature"})
    learn_temperature: bool = field(default=True, metadata={"help": "train the logit scale"})
    freeze_image: bool = field(default=False, metadata={"help": "freeze the image encoder (eval mode)"})
    freeze_text: bool = field(default=True, metadata={"help": "freeze the text encoder (eval mode)"})
    view_pooling: str = field(
        default="mean", metadata={"help": f"multi-view pooling {VIEW_POOLINGS} (breast/exam models)"}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClipConfig:
        values = dict(values)
        image = ImageEncoderConfig(**values.pop("image", {}))
        text = TextEncoderConfig(**values.pop("text", {}))
        return cls(image=image, text=text, **values)


class ProjectionHead(nn.Module):
    """Encoder features -> joint space.

    ``mlp``: ``layers`` linear layers with ReLU + dropout between them (MMG-CLIP's best: 2 layers,
    dropout 0.2). ``residual``: Mammo-CLIP's head, ``LayerNorm(p + Dropout(fc(GELU(p))))`` with
    ``p = projection(x)``; its submodule names match Mammo-CLIP checkpoints.
    """

    def __init__(self, in_dim: int, out_dim: int, layers: int = 2, dropout: float = 0.2,
                 kind: str = "mlp") -> None:
        super().__init__()
        check_choice("projection kind", kind, PROJECTION_KINDS)
        if not 1 <= layers <= 3:
            raise ValueError(f"projection layers must be 1-3, got {layers}")
        self.kind = kind
        if kind == "residual":
            self.projection = nn.Linear(in_dim, out_dim)
            self.fc = nn.Linear(out_dim, out_dim)
            self.dropout = nn.Dropout(dropout)
            self.layer_norm = nn.LayerNorm(out_dim)
        else:
            modules: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
            for _ in range(layers - 1):
                modules += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim)]
            self.mlp = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "residual":
            projected = self.projection(x)
            return self.layer_norm(projected + self.dropout(self.fc(F.gelu(projected))))
        return self.mlp(x)


def _freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


class ClipModel(nn.Module):
    """Image-level CLIP. Embeddings are L2-normalized; ``logit_scale()`` is the exponentiated scale."""

    def __init__(self, config: ClipConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClipConfig()
        self.image_encoder = ImageEncoder(config.image)
        self.text_encoder = TextEncoder(config.text)
        self.image_projection = ProjectionHead(
            self.image_encoder.out_dim, config.embed_dim, config.projection_layers,
            config.projection_dropout, config.projection_kind,
        )
        self.text_projection = ProjectionHead(
            self.text_encoder.out_dim, config.embed_dim, config.projection_layers,
            config.projection_dropout, config.projection_kind,
        )
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / config.temperature)), requires_grad=config.learn_temperature
        )
        if config.freeze_image:
            _freeze(self.image_encoder)
        if config.freeze_text:
            _freeze(self.text_encoder)
        self._text_memo: dict[str, torch.Tensor] = {}

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - nn.Module hook
        self._text_memo.clear()  # memoized features live on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        self._text_memo.clear()  # new text weights, new features
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> ClipModel:
        """Frozen encoders stay in eval mode (BatchNorm statistics and dropout untouched)."""
        super().train(mode)
        if self.config.freeze_image:
            self.image_encoder.eval()
        if self.config.freeze_text:
            self.text_encoder.eval()
        return self

    def logit_scale(self) -> torch.Tensor:
        """exp(log scale), clamped at 100 as in CLIP so training cannot blow it up."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.project_image_features(self.image_encoder(images))

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(features), dim=-1)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled text-encoder features ``(B, H)``; memoized per string when the text encoder is
        frozen (it is then a fixed function of the text, and most training texts repeat)."""
        if not self.config.freeze_text:
            return self._encode_tokens(texts)
        new = sorted({t for t in texts if t not in self._text_memo})
        if new:
            with torch.no_grad():
                self._text_memo.update(zip(new, self._encode_tokens(new)))
        return torch.stack([self._text_memo[t] for t in texts])

    def _encode_tokens(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.text_encoder.tokenize(texts)
        device = self.log_logit_scale.device
        return self.text_encoder(**{k: v.to(device) for k, v in tokens.items()})

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_features(texts)), dim=-1)

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {
            "image_embeddings": self.encode_image(images),
            "text_embeddings": self.encode_text(texts),
            "logit_scale": self.logit_scale(),
        }


@torch.no_grad()
def attribute_embedding(model: ClipModel, attribute: str) -> torch.Tensor:
    """``(D,)`` unit mean of the normalized embeddings of the attribute's sentence bank."""
    with eval_mode(model):
        embeddings = model.encode_text(attribute_sentences(attribute))
    return torch.nn.functional.normalize(embeddings.mean(dim=0), dim=0)


class ViewPooling(nn.Module):
    """Pool per-view features ``(B, V, D)`` over present views (``mask`` ``(B, V)``).

    ``mean``: the average of present views (MMG-CLIP eq. 3). ``attention``: gated attention
    (Ilse et al. 2018) with softmax over present views; the weights say which view drove the exam
    embedding. Returns ``(pooled (B, D), weights (B, V))``; missing views get weight 0.
    """

    def __init__(self, kind: str, dim: int, hidden: int = 128) -> None:
        super().__init__()
        check_choice("view pooling", kind, VIEW_POOLINGS)
        self.kind = kind
        if kind == "attention":
            self.value = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
            self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid())
            self.score = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every item needs at least one present view (mask row all False)")
        if self.kind == "mean":
            weights = mask.to(features.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True)
        else:
            scores = self.score(self.value(features) * self.gate(features)).squeeze(-1)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
        return (weights.unsqueeze(-1) * features).sum(dim=1), weights


class MultiViewClipModel(nn.Module):
    """Breast- or exam-level CLIP: encode present views, pool their features, project.

    The image encoder only sees present views, so missing views cost nothing and cannot leak zeros
    into the pooled embedding.
    """

    def __init__(self, clip: ClipModel) -> None:
        super().__init__()
        self.clip = clip
        self.pooling = ViewPooling(clip.config.view_pooling, clip.image_encoder.out_dim)

    def view_features(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder features ``(B, V, D)`` of ``images`` ``(B, V, C, H, W)``; zeros where missing."""
        batch, views = mask.shape
        present = self.clip.image_encoder(images[mask])
        features = present.new_zeros(batch, views, present.shape[-1])
        features[mask] = present
        return features

    def encode_views(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled embedding, per-view embeddings (both normalized) and the pooling weights."""
        features = self.view_features(images, mask)
        pooled, weights = self.pooling(features, mask)
        return {
            "image_embeddings": self.clip.project_image_features(pooled),
            "view_embeddings": self.clip.project_image_features(features),
            "view_weights": weights,
        }

    def forward(self, images: torch.Tensor, mask: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        out = self.encode_views(images, mask)
        out["text_embeddings"] = self.clip.encode_text(texts)
        out["logit_scale"] = self.clip.logit_scale()
        return out
