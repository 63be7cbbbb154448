"""Contrastive and masked-language-modelling losses for mammography CLIP training.

- :func:`clip_loss`: CLIP's symmetric InfoNCE, optionally with several positives per row. Texts
  synthesized from labels repeat across a batch (every normal BI-RADS 1 image gets the same
  canonical text), and plain InfoNCE would push such identical pairs apart as false negatives.
- :func:`multiview_loss`: Mammo-CLIP's multi-view supervision (two image views x two text
  augmentations, plus image-image and text-text terms).
- :func:`mask_tokens` / :func:`mlm_loss`: MAM-CLIP's auxiliary masked language modelling (they add
  0.5 x MLM through an image-text fusion module, :class:`models.fusion.FusionMLMHead`, to InfoNCE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.data.labels import IGNORE_INDEX


def clip_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    positives: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE: ``(CE(image -> text) + CE(text -> image)) / 2``.

    Args:
        image_emb: ``(B, D)`` L2-normalized image embeddings.
        text_emb: ``(B, D)`` L2-normalized text embeddings; row ``i`` pairs with image ``i``.
        logit_scale: the similarity multiplier (already exponentiated, e.g. ``1 / 0.07``).
        positives: optional ``(B, B)`` bool, ``[i, j]`` True when image ``i`` matches text ``j``;
            each direction's target is then uniform over the row's (or column's) positives.

    Raises:
        ValueError: mismatched shapes, or ``positives`` not ``(B, B)`` with a True diagonal.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must both be (B, D); got {tuple(image_emb.shape)} and"
            f" {tuple(text_emb.shape)}"
        )
    logits = logit_scale * image_emb @ text_emb.T
    size = logits.shape[0]
    if positives is None:
        targets = torch.arange(size, device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    if positives.shape != (size, size) or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be a ({size}, {size}) bool tensor; got {positives.dtype}"
            f" {tuple(positives.shape)}"
        )
    if not bool(positives.diagonal().all()):
        raise ValueError("positives must mark every pair (i, i) as positive (True diagonal)")
    weights = positives.to(device=logits.device, dtype=logits.dtype)  # texts' positives are built on the CPU
    image_to_text = weights / weights.sum(dim=1, keepdim=True)
    text_to_image = weights.T / weights.T.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.T, text_to_image)) / 2


def positives_from_texts(texts: Sequence[str]) -> Tensor:
    """``(B, B)`` bool: ``[i, j]`` True where ``texts[i] == texts[j]`` (for :func:`clip_loss`)."""
    ids: dict[str, int] = {}
    codes = torch.tensor([ids.setdefault(text, len(ids)) for text in texts])
    return codes[:, None] == codes[None, :]


@dataclass(frozen=True)
class MultiViewWeights:
    """Weights of :func:`multiview_loss`'s terms in ``total``."""

    image_text: float = 1.0
    image_image: float = 1.0
    text_text: float = 1.0


def multiview_loss(
    image1: Tensor,
    image2: Tensor,
    text1: Tensor,
    text2: Tensor,
    logit_scale: Tensor | float,
    weights: MultiViewWeights = MultiViewWeights(),
    positives: Tensor | None = None,
) -> dict[str, Tensor]:
    """Mammo-CLIP's multi-view loss over two image views and two text augmentations.

    ``image_text`` is the mean :func:`clip_loss` over the four (view, augmentation) pairs;
    ``image_image`` contrasts view 1 with view 2 (ICL) and ``text_text`` augmentation 1 with
    augmentation 2 (TCL). ``positives`` (pairs with the same underlying text) applies to the
    image-text and text-text terms; image-image stays instance discrimination (two different
    images are never the same image). A term whose weight is 0 is still reported, computed without
    gradient, and left out of ``total``.

    Args:
        image1, image2: ``(B, D)`` L2-normalized embeddings of two views/augmentations per sample.
        text1, text2: ``(B, D)`` L2-normalized embeddings of two text augmentations per sample.
        logit_scale: the similarity multiplier (already exponentiated).
        weights: term weights (default all 1).
        positives: optional ``(B, B)`` bool positives (see :func:`clip_loss`).

    Returns:
        ``{"image_text", "image_image", "text_text", "total"}`` scalar tensors.
    """

    def image_text() -> Tensor:
        pairs = [(image, text) for image in (image1, image2) for text in (text1, text2)]
        return torch.stack([clip_loss(i, t, logit_scale, positives) for i, t in pairs]).mean()

    terms = {
        "image_text": image_text,
        "image_image": lambda: clip_loss(image1, image2, logit_scale),
        "text_text": lambda: clip_loss(text1, text2, logit_scale, positives),
    }
    parts: dict[str, Tensor] = {}
    total = image1.new_zeros(())
    for name, compute in terms.items():
        weight = getattr(weights, name)
        if weight:
            parts[name] = compute()
            total = total + weight * parts[name]
        else:
            with torch.no_grad():
                parts[name] = compute()
    return {**parts, "total": total}


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    special_ids: Sequence[int],
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking: pick ``probability`` of the real tokens; of those 80 % -> mask, 10 % -> random
    token, 10 % unchanged.

    Special and padding tokens are never picked; every sequence with at least one real token gets
    at least one pick (short synthesized sentences would otherwise often get none). Random
    replacements are drawn from the vocabulary without the special ids and the mask id.

    Args:
        input_ids: ``(B, L)`` token ids.
        attention_mask: ``(B, L)``, nonzero/True at real (non-padding) tokens.
        special_ids: ids never masked (CLS, SEP, PAD, ...).
        mask_token_id: the ``[MASK]`` id.
        vocab_size: size of the vocabulary random replacements come from.
        probability: fraction of real tokens picked, in ``[0, 1]``.
        generator: torch generator on ``input_ids``' device, for reproducible masks.

    Returns:
        ``(masked_ids, labels)``: ``labels`` holds the original id at picked positions and
        :data:`models.data.labels.IGNORE_INDEX` (-100) elsewhere.

    Raises:
        ValueError: mismatched shapes or ``probability`` outside ``[0, 1]``.
    """
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, L); got {tuple(input_ids.shape)} and"
            f" {tuple(attention_mask.shape)}"
        )
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    device = input_ids.device
    special = torch.tensor(list(special_ids), dtype=input_ids.dtype, device=device)
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    draw = torch.rand(input_ids.shape, generator=generator, device=device)
    picked = candidates & (draw < probability)
    # Sequences left without a pick get their candidate with the lowest draw.
    missing = candidates.any(dim=1) & ~picked.any(dim=1)
    fallback = draw.masked_fill(~candidates, 2.0).argmin(dim=1)
    picked[missing, fallback[missing]] = True

    labels = input_ids.masked_fill(~picked, IGNORE_INDEX)
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    excluded = torch.cat([special, special.new_tensor([mask_token_id])])
    allowed = torch.arange(vocab_size, device=device)
    allowed = allowed[~torch.isin(allowed, excluded)]
    random_ids = allowed[
        torch.randint(len(allowed), input_ids.shape, generator=generator, device=device)
    ]
    masked = input_ids.clone()
    masked[picked & (action < 0.8)] = mask_token_id
    to_random = picked & (action >= 0.8) & (action < 0.9)
    masked[to_random] = random_ids[to_random].to(masked.dtype)
    return masked, labels


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over positions whose label is not -100 (IGNORE_INDEX).

    With no labelled position the loss is 0 and still connected to ``logits`` (backward works and
    gives zero gradients), where ``F.cross_entropy`` would return NaN.

    Args:
        logits: ``(B, L, V)`` vocabulary logits.
        labels: ``(B, L)`` target ids or -100.
    """
    flat_labels = labels.reshape(-1)
    summed = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), flat_labels, ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return summed / (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
