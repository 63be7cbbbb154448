"""Per-view attribution for exam-level CLIP models: maps, view attributions and predictions.

MMG-CLIP pools up to four views into one exam embedding (eq. 3: the mean of the present views'
encoder features, then the projection head). A saliency map taken on that average cannot say which
breast or view holds the finding. Here the *exam-level* target (cosine of the pooled exam embedding
with an attribute's text embedding, :class:`ExamTarget`) is attributed back to each view separately.

Conventions: exams are ``images`` ``(B, V, 1, H, W)`` in [0, 1] in the slot order of
:data:`models.data.datasets.EXAM_VIEWS` (R-CC, L-CC, R-MLO, L-MLO) with a bool ``mask`` ``(B, V)``
(False = missing view: never encoded, and every attribution of it is exactly 0).

- **Per-view maps**: every registered method that runs per view (:mod:`mammo_interp.methods`;
  built in: Grad-CAM and LayerCAM at the encoder's feature layer, Integrated Gradients on the
  pixels, occlusion), of the exam target, one map per present view. Maps of
  one exam are normalized **jointly** (one min-max over the breast masks of all present views, so a
  hot view stays hotter than a cold one) or per view (every view reaches 1: the view is arbitrary).
- **The baseline, "view-averaged Grad-CAM"**: ``ReLU(sum_v CAM_v)`` over present views, where
  ``CAM_v`` is view v's pre-ReLU Grad-CAM of the exam target, broadcast to every view (each
  normalized inside its own breast mask). With mean pooling of avg-pooled head maps every view gets
  the same channel weights (``dS/dF_v = dS/dp / (P h w)``), so this *is* Grad-CAM of the exam target
  on the view-averaged feature map, the map the exam embedding pools: one map for all views, which
  therefore identify the lesion view no better than chance (ties are broken at random, seeded).
- **View attribution** ``(B, V)``: gradient x input summed per view; leave-one-view-out
  ``v(P) - v(P minus i)``; exact Shapley values over the present views (``2^P`` subsets through the
  mask, features encoded once); the pooling weights (informative for attention pooling only).
  ``v(empty)`` is 0 (``empty="zero"``) or the score of one black view (``"blank"``, default); it
  shifts every Shapley value by the same ``-v(empty)/P``, so rankings do not depend on it.
- **Per-view / per-breast prediction**: each view, and each breast's pooled views, scored with the
  same model against the attribute's sentences that name that side ("... in the left breast").

Everything runs on the model's device (exams are moved there); maps, attributions and predictions
come back on the CPU. The study over a split, its tables and figures: :mod:`mammo_interp.saliency`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammo_interp import methods as registry
from mammo_interp.features import breast_mask
from mammo_interp.heatmaps import normalize_in_mask, upsample
from mammo_interp.methods import Method, MethodContext
from mammo_interp.methods.cams import grad_cam_maps
from models.checkpoints import clip_from_checkpoint
from models.clip import ClipModel, MultiViewClipModel
from models.data.datasets import EXAM_VIEWS
from models.encoders.tokens import attached
from models.device import module_device
from models.errors import check_choice
from models.text import SIDE_WORDS, attribute_sentences
from models.training import eval_mode

SLOTS = tuple(f"{side}-{view}" for side, view in EXAM_VIEWS)
SIDES = ("R", "L")
ATTRIBUTION_NAMES = {"gradient_x_input": "gradient x input", "leave_one_out": "leave-one-view-out",
                     "shapley": "Shapley", "pooling_weight": "pooling weight"}
EMPTY_VALUES = ("blank", "zero")


class ExamTarget(nn.Module):
    """Exam model -> ``(B,)`` cosine of the pooled exam embedding with a fixed text embedding."""

    def __init__(self, model: MultiViewClipModel, text_embedding: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("text_embedding", F.normalize(text_embedding.detach(), dim=-1))
        self.train(model.training)  # a new wrapper is in training mode; eval_mode would restore that onto the model

    def features(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-view encoder features ``(B, V, D)``, zeros where missing."""
        return self.model.view_features(images, mask)

    def score_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, V, D)`` features over ``mask`` ``(B, V)``, project, cosine: ``(B,)``."""
        pooled, _ = self.model.pooling(features, mask)
        return self.model.clip.project_image_features(pooled) @ self.text_embedding

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.features(images, mask), mask)


def _grad_input(images: torch.Tensor) -> torch.Tensor:
    """A leaf copy that requires grad (frozen encoders would otherwise build no graph)."""
    return images.detach().clone().requires_grad_(True)


def _scatter(present: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(P, ...)`` values of the present views -> ``(B, V, ...)`` with zeros where missing."""
    out = present.new_zeros(*mask.shape, *present.shape[1:])
    out[mask] = present
    return out


def view_grad_cam(target: ExamTarget, images: torch.Tensor, mask: torch.Tensor,
                  layer: nn.Module) -> torch.Tensor:
    """Pre-ReLU Grad-CAM ``(B, V, h, w)`` of the exam target at ``layer`` for each present view
    (the layer runs on the present views only); zeros where missing."""
    with eval_mode(target), attached(layer):
        maps = grad_cam_maps(target, layer, images, mask, relu=False)
    return _scatter(maps.detach(), mask).float().cpu()


def view_maps(method: Method, context: MethodContext, target: ExamTarget, images: torch.Tensor,
              mask: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A registered per-view method's maps of the exam target, unnormalized (so that one exam's
    views can be normalized jointly): ``(B, V, h, w)`` at the layer's resolution or ``(B, V, H, W)``
    at the input's (``method.resolution``), on the CPU; 0 for missing views."""
    with eval_mode(target), attached(layer):
        maps = method.maps(context, target, layer, images, mask)
    if method.resolution == "layer":
        return _scatter(maps.detach(), mask).float().cpu()
    return maps.float().cpu() * mask.cpu()[..., None, None]


def view_averaged_cam(cams: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline: ``ReLU(sum of the present views' pre-ReLU CAMs)`` ``(B, h, w)`` (module doc)."""
    return (cams * mask[..., None, None]).sum(dim=1).clamp(min=0)


def gradient_x_input(target: ExamTarget, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, V)`` sum over each view's pixels of input x gradient (captum ``InputXGradient``)."""
    from captum.attr import InputXGradient  # captum imports pyplot: on first use

    with eval_mode(target):
        attr = InputXGradient(target).attribute(_grad_input(images), additional_forward_args=(mask,))
    return attr.detach().sum(dim=(2, 3, 4)) * mask


@torch.no_grad()
def subset_values(target: ExamTarget, images: torch.Tensor, mask: torch.Tensor, empty: str = "blank",
                  features: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 2^V)`` exam score of every subset of views, indexed by bitmask (bit v = slot v).

    Subsets that include a missing view are NaN. Present views are encoded once; each subset is
    scored by pooling their features under the restricted mask (exactly the model on that subset).
    ``v(empty)`` (index 0): 0, or the score of a single black view (``empty="blank"``).
    ``features``: the ``(B, V, D)`` :meth:`ExamTarget.features` when already computed.
    """
    check_choice("empty", empty, EMPTY_VALUES)
    with eval_mode(target):
        features = target.features(images, mask) if features is None else features
        batch, views = mask.shape
        subsets = torch.tensor([[bool(s >> v & 1) for v in range(views)] for s in range(1, 2 ** views)],
                               device=mask.device)
        values = torch.full((batch, 2 ** views), math.nan, dtype=torch.float64)
        for b in range(batch):
            valid = ~(subsets & ~mask[b]).any(dim=1)
            chosen = subsets[valid]
            scores = target.score_features(features[b].expand(len(chosen), -1, -1), chosen)
            values[b, 1:][valid.cpu()] = scores.double().cpu()
        if empty == "blank":
            blank = torch.zeros(1, 1, *images.shape[2:], dtype=images.dtype, device=images.device)
            values[:, 0] = float(target(blank, torch.ones(1, 1, dtype=torch.bool, device=mask.device)))
        else:
            values[:, 0] = 0.0
    return values


def _present_bits(mask: torch.Tensor) -> list[int]:
    return [sum(1 << v for v in range(mask.shape[1]) if mask[b, v]) for b in range(mask.shape[0])]


def shapley_values(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values ``(B, V)`` of the present views (the players) from :func:`subset_values`:
    ``phi_i = sum_{S subset of P minus i} |S|! (n-|S|-1)! / n! (v(S + i) - v(S))``. They sum to
    ``v(P) - v(empty)``; missing views are no players and get 0."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b, players in enumerate(_present_bits(mask)):
        n = bin(players).count("1")
        for i in range(mask.shape[1]):
            if not players >> i & 1:
                continue
            others = players & ~(1 << i)
            subset = others
            while True:  # every subset of ``others``, including the empty one
                size = bin(subset).count("1")
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                out[b, i] += weight * (values[b, subset | 1 << i] - values[b, subset])
                if subset == 0:
                    break
                subset = (subset - 1) & others
    return out


def leave_one_out(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, V)`` score drop when one present view is masked out (``v(P) - v(P minus i)``; the last
    view falls back to ``v(empty)``); 0 for missing views."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b, players in enumerate(_present_bits(mask)):
        for i in range(mask.shape[1]):
            if players >> i & 1:
                out[b, i] = values[b, players] - values[b, players & ~(1 << i)]
    return out


def view_attributions(target: ExamTarget, images: torch.Tensor, mask: torch.Tensor,
                      empty: str = "blank") -> dict[str, torch.Tensor]:
    """Every view-attribution method (keys of :data:`ATTRIBUTION_NAMES`) as ``(B, V)`` float64 on
    the CPU, plus ``"values"``: the ``(B, 2^V)`` subset scores (index = bitmask of the subset) and
    ``"features"``: the ``(B, V, D)`` encoder features they came from (on the model's device)."""
    with torch.no_grad(), eval_mode(target):
        features = target.features(images, mask)
        weights = target.model.pooling(features, mask)[1]
    values = subset_values(target, images, mask, empty, features)
    return {"gradient_x_input": gradient_x_input(target, images, mask).double().cpu(),
            "leave_one_out": leave_one_out(values, mask), "shapley": shapley_values(values, mask),
            "pooling_weight": (weights * mask).double().cpu(), "values": values, "features": features}


def normalize_views(maps: torch.Tensor, masks: torch.Tensor, present: torch.Tensor,
                    joint: bool = True) -> torch.Tensor:
    """Min-max ``(V, H, W)`` maps of one exam inside the breast ``masks`` of the present views.

    ``joint``: one min-max over all present views (comparable across views); otherwise each view
    separately (:func:`mammo_interp.heatmaps.normalize_in_mask`). 0 outside masks and for missing
    views.
    """
    masks = masks.bool() & present.bool()[:, None, None]
    if not joint:
        return normalize_in_mask(maps, masks)
    views, height, width = maps.shape  # views stacked as one tall map: one min-max
    return normalize_in_mask(maps.reshape(1, views * height, width),
                             masks.reshape(1, views * height, width)).reshape(views, height, width)


class PerViewSaliency:
    """Per-view saliency of an exam-level model, for a user's own model: the model at construction,
    the data at call (the shape of :mod:`mammo_interp.attribution`'s methods).

    ``model`` pools views into one exam embedding (``view_features(images, mask)``, ``pooling``,
    ``clip.project_image_features``: a :class:`~models.clip.MultiViewClipModel`, e.g. from
    :func:`exam_model`); ``layer`` is its encoder's feature module (Grad-CAM's layer). Exams are
    ``(B, V, C, H, W)`` with a bool ``mask`` ``(B, V)`` (False: a missing view, never encoded, 0
    everywhere); the target is a ``(D,)`` text embedding (the exam cosine is explained).
    """

    def __init__(self, model: MultiViewClipModel, layer: nn.Module, method: str = "gradcam",
                 joint: bool = True, steps: int = 8, window: int = 64, stride: int = 32) -> None:
        registry.check((method,), "method", per_view=True)
        self.model, self.layer, self.method, self.joint = model, layer, registry.get(method), joint
        self.context = MethodContext(ig_steps=steps, ig_internal_batch=1, occlusion_window=window,
                                     occlusion_stride=stride)

    def attribute(self, images: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                  masks: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, V, H, W)`` maps in [0, 1]: each exam's views normalized jointly (a hot view stays
        hotter than a cold one) or per view, inside ``masks`` (``(B, V, H, W)`` bool; default the
        tissue of each present view)."""
        mask = _exam_mask(images, mask)
        device = module_device(self.model)
        exam = ExamTarget(self.model, target.to(device))
        images, mask = images.to(device), mask.to(device)
        raw = view_maps(self.method, self.context, exam, images, mask, self.layer)
        if self.method.resolution == "layer":
            raw = upsample(raw.flatten(0, 1), tuple(images.shape[-2:])).view(*mask.shape, *images.shape[-2:])
        if masks is None:
            masks = torch.from_numpy(np.stack([[breast_mask(view[0].numpy()) for view in exam_images]
                                               for exam_images in images.detach().cpu()]))
        mask = mask.cpu()
        return torch.stack([normalize_views(raw[b], masks[b], mask[b], self.joint) for b in range(len(mask))])

    def views(self, images: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              empty: str = "blank") -> dict[str, torch.Tensor]:
        """How much each view contributes to the exam score: ``(B, V)`` per key of
        :data:`ATTRIBUTION_NAMES` (exact Shapley values, leave-one-view-out, gradient x input,
        pooling weight); 0 for missing views."""
        device = module_device(self.model)
        found = view_attributions(ExamTarget(self.model, target.to(device)), images.to(device),
                                  _exam_mask(images, mask).to(device), empty)
        return {name: found[name] for name in ATTRIBUTION_NAMES}


def _exam_mask(images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if images.ndim != 5:
        raise ValueError(f"exams must be (B, V, C, H, W); got shape {tuple(images.shape)}")
    if mask is None:
        return torch.ones(images.shape[:2], dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != images.shape[:2]:
        raise ValueError(f"mask must be (B, V) = {tuple(images.shape[:2])}; got {tuple(mask.shape)}")
    return mask


@torch.no_grad()
def side_embeddings(clip: ClipModel, attribute: str) -> dict[str, torch.Tensor]:
    """``{"R": (D,), "L": (D,)}``: the unit mean embedding of the attribute's sentences that name
    that side ("A mass in the left breast.", ...)."""
    sentences = attribute_sentences(attribute)
    out = {}
    with eval_mode(clip):
        for side, word in SIDE_WORDS.items():
            chosen = [s for s in sentences if f" {word} " in f" {s} "] or sentences
            out[side] = F.normalize(clip.encode_text(chosen).mean(dim=0), dim=0)
    return out


@torch.no_grad()
def view_predictions(target: ExamTarget, features: torch.Tensor, mask: torch.Tensor,
                     sides: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-view ``(B, V)`` and per-breast ``(B, 2)`` (order :data:`SIDES`) cosines with the side's
    sentences (:func:`side_embeddings`), and the exam score ``(B,)``, from the ``(B, V, D)``
    :meth:`ExamTarget.features`; NaN where nothing is present."""
    model = target.model
    with eval_mode(target):
        exam = target.score_features(features, mask)
        view_emb = model.clip.project_image_features(features)
        laterality = [side for side, _ in EXAM_VIEWS]
        texts = torch.stack([sides[s] for s in laterality])  # (V, D)
        per_view = (view_emb * texts).sum(-1).masked_fill(~mask, math.nan)
        per_breast = torch.full((mask.shape[0], len(SIDES)), math.nan, device=mask.device)
        for k, side in enumerate(SIDES):
            in_side = mask & torch.tensor([s == side for s in laterality], device=mask.device)
            rows = in_side.any(dim=1)
            if rows.any():
                pooled, _ = model.pooling(features[rows], in_side[rows])
                per_breast[rows, k] = model.clip.project_image_features(pooled) @ sides[side]
    return {"view": per_view.double().cpu(), "breast": per_breast.double().cpu(), "exam": exam.double().cpu()}


def exam_model(payload: Mapping[str, Any], source: str, text_encoder: str | None = None) -> MultiViewClipModel:
    """Exam-level model of a checkpoint read by :func:`~models.checkpoints.load_checkpoint`: its CLIP
    plus the view pooling it was trained with (attention weights from the checkpoint's
    ``extra_modules``; mean pooling has none)."""
    model = MultiViewClipModel(clip_from_checkpoint(payload, source, text_encoder))
    saved = payload.get("extra_modules", {}).get("multiview", {})
    pooling = {k.removeprefix("pooling."): v for k, v in saved.items() if k.startswith("pooling.")}
    if pooling:
        model.pooling.load_state_dict(pooling)
    elif any(True for _ in model.pooling.parameters()):
        raise ValueError(f"{source}: attention view pooling without trained pooling weights "
                         "(pretrain it with --level exam)")
    return model.eval()


def top_index(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest finite score; ties (within 1e-9 relative) broken at random."""
    finite = np.isfinite(scores)
    best = scores[finite].max()
    ties = np.flatnonzero(finite & (scores >= best - 1e-9 * max(1.0, abs(best))))
    return int(rng.choice(ties))
