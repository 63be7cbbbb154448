"""A CLIP model as a zero-shot classifier: class prompts in, calibrated class probabilities out.

Probabilities are ``softmax(logit_scale * cosine)`` with the model's *learned* logit scale: without it
(scale 1, as some published evaluations do) cosines in [-1, 1] give probabilities bunched near 1/C,
ranking unchanged but calibration lost. Several prompts per class are combined either as an
**embedding ensemble** (average the normalized prompt embeddings, renormalize, one softmax; CLIP's
recipe) or a **score ensemble** (one softmax per prompt variant, average the probabilities). A task
whose prompt set has ``negatives`` scores each class against its own negation instead (CXR-CLIP's
multi-class protocol), so its probabilities need not sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mammo_interp.prompts import TaskPrompts
from models.clip import ClipModel
from models.errors import check_choice

ENSEMBLES = ("embedding", "score")
ENSEMBLE_NAMES = {"embedding": "prompt embeddings averaged", "score": "prompt probabilities averaged"}


def encode_prompts(model: ClipModel, prompts: Sequence[Sequence[str]]) -> list[torch.Tensor]:
    """Normalized text embeddings per class: a list of ``C`` tensors ``(K_c, D)``."""
    flat = [p for class_prompts in prompts for p in class_prompts]
    if any(not class_prompts for class_prompts in prompts):
        raise ValueError("every class needs at least one prompt")
    with torch.no_grad():
        embedded = F.normalize(model.encode_text(flat), dim=-1)
    return list(torch.split(embedded, [len(p) for p in prompts]))


def ensemble_embeddings(text: Sequence[torch.Tensor]) -> torch.Tensor:
    """Embedding ensemble: per class the mean of its normalized prompt embeddings, renormalized.
    ``C`` tensors ``(K_c, D)`` -> ``(C, D)``."""
    return F.normalize(torch.stack([F.normalize(t, dim=-1).mean(dim=0) for t in text]), dim=-1)


def zero_shot_probabilities(image: torch.Tensor, text: Sequence[torch.Tensor], logit_scale: float,
                            ensemble: str = "embedding") -> torch.Tensor:
    """Class probabilities ``(N, C)`` of normalized image embeddings ``(N, D)``.

    ``text`` holds ``C`` tensors ``(K_c, D)`` of prompt embeddings. ``embedding``:
    ``softmax(scale * image @ ensemble_embeddings(text).T)``. ``score``: prompt variant ``k`` takes
    prompt ``k mod K_c`` of every class, gets its own softmax, and the ``max K_c`` variants'
    probabilities are averaged.
    """
    check_choice("ensemble", ensemble, ENSEMBLES)
    image = F.normalize(image, dim=-1)
    if ensemble == "embedding":
        return (logit_scale * image @ ensemble_embeddings(text).T).softmax(dim=-1)
    variants = max(len(t) for t in text)
    probs = [
        (logit_scale * image @ torch.stack([F.normalize(t[k % len(t)], dim=-1) for t in text]).T
         ).softmax(dim=-1)
        for k in range(variants)
    ]
    return torch.stack(probs).mean(dim=0)


def contrast_probabilities(image: torch.Tensor, positive: Sequence[torch.Tensor],
                           negative: Sequence[torch.Tensor], logit_scale: float,
                           ensemble: str = "embedding") -> torch.Tensor:
    """``(N, C)``: per class the probability of its prompts against its negation's prompts."""
    columns = [zero_shot_probabilities(image, [p, n], logit_scale, ensemble)[:, 0]
               for p, n in zip(positive, negative)]
    return torch.stack(columns, dim=1)


class ZeroShotClassifier:
    """A model bound to one task's prompts; classifies image embeddings of known side and view.

    Text embeddings are computed once per (side, view) the prompts depend on. The model should be in
    eval mode (projection-head dropout); this class does not change its mode.
    """

    def __init__(self, model: ClipModel, prompts: TaskPrompts, ensemble: str = "embedding",
                 use_logit_scale: bool = True) -> None:
        check_choice("ensemble", ensemble, ENSEMBLES)
        self.model, self.prompts, self.ensemble = model, prompts, ensemble
        self.logit_scale = model.logit_scale().item() if use_logit_scale else 1.0
        self._text: dict[tuple[str | None, str | None], tuple[list[torch.Tensor], list[torch.Tensor] | None]] = {}

    def text(self, side: str | None, view: str | None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Prompt embeddings of every class (and class negation) for one side and view."""
        key = (side, view)
        if key not in self._text:
            positive, negative = self.prompts.fill(side, view)
            self._text[key] = (encode_prompts(self.model, positive),
                               None if negative is None else encode_prompts(self.model, negative))
        return self._text[key]

    def predict(self, image: torch.Tensor, sides: Sequence[str | None],
                views: Sequence[str | None]) -> np.ndarray:
        """Probabilities ``(N, C)`` for image embeddings ``(N, D)`` with per-row side and view
        codes (``"L"``/``"R"``, ``"CC"``/``"MLO"``, None = any)."""
        out = np.zeros((len(image), len(self.prompts.classes)))
        contexts = list(zip(sides, views))
        for context in dict.fromkeys(contexts):
            rows = [i for i, c in enumerate(contexts) if c == context]
            positive, negative = self.text(*context)
            if negative is None:
                probs = zero_shot_probabilities(image[rows], positive, self.logit_scale, self.ensemble)
            else:
                probs = contrast_probabilities(image[rows], positive, negative, self.logit_scale,
                                               self.ensemble)
            out[rows] = probs.numpy()
        return out
