"""Every registered method on the image encoders of the mammography CLIPs (random weights: no offline
weights exist for them) and on open_clip and Hugging Face CLIP vision transformers: each method gives
heatmaps or refuses in one line. ViT patch tokens are read as a feature map (``TokenMaps``): checked
against pytorch-grad-cam's own ``reshape_transform`` route, and the model's outputs stay unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mammo_interp import Attribution, ImageEmbedding, LayerFeatures, PerViewSaliency, TokenMaps, vit_layer
from mammo_interp import factor, methods as registry
from mammo_interp.mapper import ChannelMapper
from models.checkpoints import save_checkpoint
from models.clip import ClipConfig, ClipModel, MultiViewClipModel
from models.encoders.image import ImageEncoder, ImageEncoderConfig
from readme_blocks import python_block

SIZE = (64, 48)
# the image encoders of the papers' models: Mammo-CLIP (EfficientNet-B2, B5), MMG-CLIP and MAM-CLIP
# (ConvNeXt-Tiny), MMG-CLIP's ablation (ResNet-50), and a ViT-S/16 CLIP
ENCODERS = ("vit_small_patch16_224", "convnext_tiny", "resnet50", "tf_efficientnet_b2", "tf_efficientnet_b5")
CLI_METHODS = ("factor", "gradcam", "layercam", "gscorecam", "random_channels", "breast_prior")
OPTIONS = {"cam_channels": 4, "occlusion_window": 16, "occlusion_stride": 16, "ig_steps": 2}


def _open_clip_vit() -> tuple[nn.Module, nn.Module]:
    import open_clip  # a test dependency
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    model = open_clip.CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(layers=3, width=64, head_width=32, patch_size=16,
                                                                  image_size=SIZE),
                           text_cfg=CLIPTextCfg(layers=1, width=32, heads=2, context_length=8, vocab_size=64))
    return ImageEmbedding(model.eval(), channels=3, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28)), vit_layer(model)


def _hugging_face_vit() -> tuple[nn.Module, nn.Module]:
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64),
                        vision_config=dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                                           intermediate_size=128, image_size=32, patch_size=16),
                        projection_dim=16)
    model = CLIPModel(config).eval()
    return ImageEmbedding(model, channels=3), vit_layer(model)


def _timm_encoder(name: str) -> tuple[nn.Module, nn.Module]:
    encoder = ImageEncoder(ImageEncoderConfig(name=name, weights="none")).eval()
    return encoder, encoder.feature_module()


MODELS = {**{name: (lambda name=name: _timm_encoder(name)) for name in ENCODERS},
          "open_clip ViT": _open_clip_vit, "Hugging Face CLIP ViT": _hugging_face_vit}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_method_gives_heatmaps_or_refuses_in_one_line(model_name, images, one_torch_thread):
    torch.manual_seed(0)
    model, layer = MODELS[model_name]()
    with torch.no_grad():
        before = model(images)
    maps = LayerFeatures(model, layer)(images)
    assert maps.ndim == 4 and len(maps) == 2
    text = torch.randn(before.shape[1])
    options = {**OPTIONS, "mapper": ChannelMapper(maps.shape[2] * maps.shape[3], before.shape[1])}
    for name in registry.available():
        method = registry.get(name)
        if not set(method.needs) <= {"text", "mapper"}:  # a reference model or validation boxes: not given here
            with pytest.raises(ValueError, match=f"^method: {name} needs .*which this run does not have$"):
                Attribution(model, layer, name, **options)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an all-zero map would warn
            heatmaps = Attribution(model, layer, name, **options).attribute(images, text)
        assert heatmaps.shape == (2, *SIZE), name
        assert torch.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() == 1, name
    with torch.no_grad():
        assert torch.equal(model(images), before)  # no hook left behind changes the model


def test_token_maps_leave_the_embedding_unchanged_and_come_off(images):
    torch.manual_seed(0)
    model, layer = _open_clip_vit()
    with torch.no_grad():
        plain = model(images)
        with layer.attached():
            assert torch.equal(model(images), plain)
    assert not layer.layer._forward_hooks and not layer.patch_embedding._forward_hooks


def test_grad_cam_on_vit_tokens_matches_pytorch_grad_cams_reshape_transform(images):
    """Our Grad-CAM on ``TokenMaps`` against pytorch-grad-cam's route: hooks on the block itself, its
    activations and gradients reshaped by a ``reshape_transform`` (the library's convention for ViTs)."""
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    torch.manual_seed(1)
    tower, layer = _open_clip_vit()
    text = torch.randn(16)
    ours = Attribution(tower, layer, "gradcam").attribute(images, text, normalize=False)

    grid = (SIZE[0] // 16, SIZE[1] // 16)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].reshape(len(tokens), *grid, -1).permute(0, 3, 1, 2)

    hooks = ActivationsAndGradients(tower, [layer.layer], reshape)
    try:
        score = (nn.functional.normalize(hooks(images), dim=-1) @ nn.functional.normalize(text, dim=0)).sum()
        score.backward()
        activations, gradients = hooks.activations[0], hooks.gradients[0]
    finally:
        hooks.release()
    theirs = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1).clamp(min=0)
    assert ours.shape == (2, *grid)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_wrong_prefix_tokens_fail_in_one_line(images):
    tower, layer = _open_clip_vit()
    wrong = TokenMaps(layer.layer, layer.patch_embedding, prefix_tokens=3)
    with pytest.raises(ValueError, match=r"^10 patch tokens after 3 prefix token\(s\) do not fill the 4 x 3 patch grid"):
        LayerFeatures(tower, wrong)(images)


def test_a_blank_cam_warns(images):
    """The last block of a class-token ViT: its patch tokens never reach the embedding."""
    tower, _ = _open_clip_vit()
    last = vit_layer(tower.model, block=-1)
    with pytest.warns(UserWarning, match="Grad-CAM gave an all-zero map for every image"):
        Attribution(tower, last, "gradcam").attribute(images, torch.randn(16))


def test_vit_encoder_feature_maps_agree_with_its_feature_module(images):
    encoder = ImageEncoder(ImageEncoderConfig(name="vit_small_patch16_224", weights="none")).eval()
    for layer in ("blocks.5", "head"):
        with torch.no_grad():
            maps = encoder.feature_map(images, layer)
        assert maps.shape == (2, 384, SIZE[0] // 16, SIZE[1] // 16)
        torch.testing.assert_close(LayerFeatures(encoder, encoder.feature_module(layer))(images), maps)


def test_per_view_saliency_on_a_vit_exam_model(one_torch_thread):
    torch.manual_seed(0)
    clip = ClipModel(ClipConfig(image=ImageEncoderConfig(name="vit_small_patch16_224", weights="none"), embed_dim=16))
    exams = torch.rand(1, 4, 1, *SIZE)
    mask = torch.tensor([[True, True, True, False]])
    for method in registry.available(per_view=True):
        saliency = PerViewSaliency(MultiViewClipModel(clip).eval(), clip.image_encoder.feature_module(), method,
                                   steps=2, window=16, stride=16)
        maps = saliency.attribute(exams, torch.randn(16), mask)
        assert maps.shape == (1, 4, *SIZE) and torch.isfinite(maps).all() and maps[0, 3].eq(0).all(), method
        assert maps[0, :3].max() == 1, method


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-weight CLIPs of each encoder, saved as this project's checkpoints (MiniLM text side)."""
    folder = tmp_path_factory.mktemp("any_model")

    def make(name: str):
        path = folder / f"{name}.pt"
        if not path.exists():
            torch.manual_seed(0)
            save_checkpoint(path, ClipModel(ClipConfig(image=ImageEncoderConfig(name=name, weights="none"),
                                                       embed_dim=32)), pretrain_config={"image_size": [128, 80]})
        return path
    return make


@pytest.mark.parametrize("name", [pytest.param(name, marks=[] if name.startswith("vit") else pytest.mark.slow)
                                  for name in ENCODERS])
def test_the_factor_command_explains_a_checkpoint_of_each_encoder(name, checkpoints, tiny_masses, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    factor.main(["--attribute", "mass", "--data", str(tiny_masses), "--checkpoint", str(checkpoints(name)),
                 "--no-progress", "--n-boot", "20", "--validation-fraction", "0.2", "--seed", "1",
                 "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports"), "--mapper-epochs", "2",
                 "--figure-cases", "1", "--methods", *CLI_METHODS, "--cam-channels", "4"])
    table = pd.read_csv(tmp_path / "reports" / "mass_head.csv")
    assert list(table["method"]) == [registry.labels()[name] for name in CLI_METHODS]
    long = pd.read_csv(tmp_path / "reports" / "mass_head_long.csv")
    # the energy pointing game leaves out blank heatmaps: NaN where a random network's Grad-CAM is blank on
    # every test image (ReLU of a negative map; seen with ResNet-50), as the metric documents
    assert np.isfinite(long.loc[long["metric"] != "energy PG", "value"]).all()


def test_the_readme_vit_block_runs(capsys, one_torch_thread):
    exec(compile(python_block("### Any model", "docs/python-api.md"), "docs/python-api.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "(2, 224, 224)"
