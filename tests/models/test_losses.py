"""Contrastive losses, BERT masking, MLM loss and the fusion head (models.losses, models.fusion)."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.fusion import FusionMLMHead
from models.losses import (
    MultiViewWeights,
    clip_loss,
    mask_tokens,
    mlm_loss,
    multiview_loss,
    positives_from_texts,
)

IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def softplus(x):
    return math.log(1 + math.exp(x))


def unit(rows, dim=8, seed=0):
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_clip_loss_matches_hand_computation():
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * images @ texts.T = [[2, 1.2], [0, 1.6]];
    # the CE of a 2-way row is softplus(other logit - own logit)
    image_to_text = (softplus(1.2 - 2) + softplus(0 - 1.6)) / 2
    text_to_image = (softplus(0 - 2) + softplus(1.2 - 1.6)) / 2
    expected = (image_to_text + text_to_image) / 2
    assert clip_loss(IMAGES, texts, 2.0).item() == pytest.approx(expected, rel=1e-6)
    assert clip_loss(IMAGES, texts, torch.tensor(2.0)).item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_is_torch_ce_with_identity_positives_and_symmetric():
    image, text, scale = unit(5, seed=1), unit(5, seed=2), 10.0
    logits = scale * image @ text.T
    targets = torch.arange(5)
    reference = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(clip_loss(image, text, scale), reference)
    identity = torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(clip_loss(image, text, scale, identity), reference)
    torch.testing.assert_close(clip_loss(text, image, scale), clip_loss(image, text, scale))


def test_soft_positives_lower_the_loss_of_duplicate_texts():
    # Two images whose (identical) report got slightly different embeddings, e.g. from dropout.
    texts = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    positives = positives_from_texts(["No mass was observed.", "No mass was observed."])
    assert positives.all()
    # logits = [[1.2, 1.6], [1.6, 1.2]] in both directions: hard CE = softplus(0.4) per row, soft
    # CE = logsumexp(1.2, 1.6) - (1.2 + 1.6) / 2 = log(e^-0.2 + e^0.2).
    hard = softplus(0.4)
    soft = math.log(math.exp(-0.2) + math.exp(0.2))
    assert clip_loss(IMAGES, texts, 2.0).item() == pytest.approx(hard, rel=1e-6)
    assert clip_loss(IMAGES, texts, 2.0, positives).item() == pytest.approx(soft, rel=1e-6)
    assert soft < hard


def test_positives_from_texts_and_validation():
    expected = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    assert torch.equal(positives_from_texts(["a", "b", "a"]), expected)
    with pytest.raises(ValueError, match="diagonal"):
        clip_loss(IMAGES, IMAGES, 1.0, torch.tensor([[False, True], [True, True]]))
    with pytest.raises(ValueError, match="bool"):
        clip_loss(IMAGES, IMAGES, 1.0, torch.eye(2))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        clip_loss(IMAGES, unit(3, dim=2), 1.0)


def test_multiview_total_is_weighted_sum_and_zero_weights_drop_terms():
    image1, image2, text1, text2 = (unit(4, seed=s).requires_grad_() for s in range(4))
    weights = MultiViewWeights(image_text=1.0, image_image=0.5, text_text=2.0)
    out = multiview_loss(image1, image2, text1, text2, 5.0, weights)
    expected = out["image_text"] + 0.5 * out["image_image"] + 2.0 * out["text_text"]
    torch.testing.assert_close(out["total"], expected)
    pairs = [(i, t) for i in (image1, image2) for t in (text1, text2)]
    torch.testing.assert_close(out["image_text"], sum(clip_loss(i, t, 5.0) for i, t in pairs) / 4)
    torch.testing.assert_close(out["image_image"], clip_loss(image1, image2, 5.0))

    only = multiview_loss(image1, image2, text1, text2, 5.0, MultiViewWeights(1.0, 0.0, 0.0))
    torch.testing.assert_close(only["total"], only["image_text"])
    torch.testing.assert_close(only["text_text"], out["text_text"])  # still reported
    assert not only["image_image"].requires_grad and not only["text_text"].requires_grad


def batch(size=256, length=48, seed=0):
    """Ids 5..999 framed by CLS=1 and SEP=2, padded with 0 after a random length >= 20."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (size, length), generator=gen)
    lengths = torch.randint(20, length + 1, (size,), generator=gen)
    attention = torch.arange(length)[None] < lengths[:, None]
    ids[:, 0] = 1
    ids[torch.arange(size), lengths - 1] = 2
    ids[~attention] = 0
    return ids, attention.long()


SPECIALS, MASK_ID, VOCAB = (0, 1, 2), 3, 1000


def test_mask_tokens_rates_and_protected_positions():
    ids, attention = batch()
    masked, labels = mask_tokens(
        ids, attention, SPECIALS, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(0)
    )
    protected = torch.isin(ids, torch.tensor(SPECIALS)) | (attention == 0)
    assert (labels[protected] == -100).all() and torch.equal(masked[protected], ids[protected])
    picked = labels != -100
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(masked[~picked], ids[~picked])
    assert picked.sum() / (~protected).sum() == pytest.approx(0.15, abs=0.01)
    as_mask = (masked[picked] == MASK_ID).float().mean().item()
    unchanged = (masked[picked] == ids[picked]).float().mean().item()
    assert as_mask == pytest.approx(0.8, abs=0.03)
    assert unchanged == pytest.approx(0.1, abs=0.03)
    assert 1 - as_mask - unchanged == pytest.approx(0.1, abs=0.03)
    replaced = masked[picked & (masked != MASK_ID) & (masked != ids)]
    assert not torch.isin(replaced, torch.tensor([*SPECIALS, MASK_ID])).any()


def test_mask_tokens_is_reproducible_and_masks_every_sequence():
    ids = torch.tensor([[1, 7, 2, 0, 0], [1, 8, 9, 2, 0], [1, 2, 0, 0, 0]])
    attention = (ids != 0).long()
    first, again = (
        mask_tokens(ids, attention, SPECIALS, MASK_ID, VOCAB, 0.0, torch.Generator().manual_seed(3))
        for _ in range(2)
    )
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    picked = first[1] != -100
    assert picked.sum(dim=1).tolist() == [1, 1, 0]  # one each; none in a special-only sequence
    assert picked[0, 1] and (picked[1, 1] or picked[1, 2])
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, attention, SPECIALS, MASK_ID, VOCAB, 1.5)


def test_mlm_loss_matches_cross_entropy_and_handles_no_labels():
    logits = torch.randn(2, 4, 11, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([[-100, 3, -100, 7], [5, -100, -100, -100]])
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    empty = mlm_loss(logits, torch.full_like(labels, -100))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_fusion_head_shape_and_padding_invariance():
    torch.manual_seed(0)
    head = FusionMLMHead(text_dim=16, image_dim=8, vocab_size=50, layers=2).eval()
    text, image = torch.randn(2, 6, 16), torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    logits = head(text, mask, image)
    assert logits.shape == (2, 6, 50)
    changed = text.clone()
    changed[0, 4:] = torch.randn(2, 16)  # only padded positions differ
    torch.testing.assert_close(head(changed, mask, image)[0, :4], logits[0, :4])
    torch.testing.assert_close(head(changed, mask, image)[1], logits[1])
    assert head(text, mask, image[:, 0]).shape == (2, 6, 50)  # one pooled image embedding


def test_positives_built_on_the_cpu_follow_the_embeddings_to_their_device():
    """positives_from_texts builds its mask on the CPU; on a GPU the loss once failed mixing devices
    (seen on a CUDA machine). The meta device stands in for a GPU: it refuses CPU operands too."""
    embeddings = torch.randn(3, 4, device="meta")
    positives = positives_from_texts(["No mass was observed.", "No mass was observed.", "A mass."])
    loss = clip_loss(embeddings, embeddings, 1.0, positives)
    assert loss.device.type == "meta" and loss.shape == ()
