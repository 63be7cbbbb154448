"""CLIP model: projection variants, temperature, freezing, view pooling with missing views."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.clip import ClipConfig, ClipModel, MultiViewClipModel, ProjectionHead, ViewPooling
from models.encoders import ImageEncoderConfig


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_mlp_projection_depth(layers):
    head = ProjectionHead(10, 4, layers=layers, dropout=0.2)
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == layers
    assert sum(isinstance(m, nn.Dropout) for m in head.modules()) == layers - 1
    assert head(torch.rand(3, 10)).shape == (3, 4)


def test_residual_projection_is_mammo_clip_formula():
    head = ProjectionHead(6, 4, kind="residual", dropout=0.0).eval()
    x = torch.rand(2, 6)
    p = head.projection(x)
    expected = nn.functional.layer_norm(p + head.fc(nn.functional.gelu(p)), (4,),
                                        head.layer_norm.weight, head.layer_norm.bias)
    assert torch.allclose(head(x), expected)


def test_projection_rejects_bad_settings():
    with pytest.raises(ValueError, match="1-3"):
        ProjectionHead(4, 4, layers=4)
    with pytest.raises(ValueError, match="mlp"):
        ProjectionHead(4, 4, kind="conv")


def test_embeddings_normalized_and_temperature(clip_model):
    out = clip_model(torch.rand(2, 1, 64, 48), ["a mass", "no mass"])
    assert torch.allclose(out["image_embeddings"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out["text_embeddings"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_frozen_image_encoder_keeps_bn_statistics():
    model = ClipModel(ClipConfig(embed_dim=16, freeze_image=True, image=ImageEncoderConfig(weights="none")))
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    model.train()
    assert not model.image_encoder.training and model.image_projection.training
    model.encode_image(torch.rand(2, 1, 64, 48)).sum().backward()
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert model.image_projection.mlp[0].weight.grad is not None


def test_text_memo_equals_fresh_encoding(clip_model):
    texts = ["A round mass.", "Calcifications.", "A round mass."]
    first = clip_model.encode_text(texts)
    tokens = clip_model.text_encoder.tokenize(texts)
    with torch.no_grad():
        fresh = nn.functional.normalize(clip_model.text_projection(clip_model.text_encoder(**tokens)), dim=-1)
    assert torch.allclose(first, fresh, atol=1e-6)


def test_mean_pooling_ignores_missing_views():
    features = torch.rand(2, 4, 3)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    pooled, weights = ViewPooling("mean", 3)(features, mask)
    assert torch.allclose(pooled[0], features[0, [0, 2, 3]].mean(0))
    assert torch.allclose(pooled[1], features[1].mean(0))
    assert weights[0, 1] == 0


def test_attention_pooling_weights_and_masking():
    pooling = ViewPooling("attention", 3)
    features = torch.rand(2, 4, 3)
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    pooled, weights = pooling(features, mask)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[0, 1] == 0 and weights[0, 3] == 0
    changed = features.clone()
    changed[0, 1] = 100.0  # content of a missing view must not matter
    assert torch.allclose(pooling(changed, mask)[0][0], pooled[0])
    with pytest.raises(ValueError, match="at least one present view"):
        pooling(features, torch.zeros(2, 4, dtype=torch.bool))


def test_multiview_model_never_encodes_missing_views(clip_model):
    model = MultiViewClipModel(clip_model).eval()
    images = torch.rand(1, 4, 1, 64, 48)
    mask = torch.tensor([[True, True, False, True]])
    with torch.no_grad():
        out = model.encode_views(images, mask)
        garbage = images.clone()
        garbage[0, 2] = float("nan")
        again = model.encode_views(garbage, mask)
    assert torch.allclose(out["image_embeddings"], again["image_embeddings"])
    assert out["view_embeddings"].shape == (1, 4, 64)
    assert out["view_weights"][0, 2] == 0
    assert math.isclose(out["view_weights"].sum().item(), 1.0, rel_tol=1e-6)
