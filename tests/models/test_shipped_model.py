"""The shipped default model: compact fp16 export, a card that matches the file, and metrics that
reproduce from the shipped weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import models.default_model as default_model
import models.reference as reference
from models.cards import sha256
from models.checkpoints import load_checkpoint, load_clip
from models.clip import ClipConfig
from models.data.check_set import CHECK_SET, check_set_table
from models.data.default import DEFAULT_SYNTH
from models.data.synth import GENERATOR_VERSION
from models.io import save_torch


def _as_json(values):
    """``values`` as the card stores them (tuples become lists)."""
    return json.loads(json.dumps(values))


def test_export_keeps_the_model_in_fp16_without_training_state(tiny_checkpoint, tmp_path, monkeypatch):
    trained = load_checkpoint(tiny_checkpoint)  # as pretraining writes it: the run folder's absolute path
    run = tmp_path / "runs" / "clip"
    save_torch(run / "best.pt", {**trained, "pretrain_config": {**trained["pretrain_config"], "out": str(run)}})
    monkeypatch.chdir(tmp_path)
    exported = default_model.export_weights(run / "best.pt", tmp_path / "small.pt")
    payload = load_checkpoint(exported)
    assert payload["pretrain_config"] == {"image_size": [128, 80], "out": "runs/clip"}  # machine-free
    assert set(payload) == {"format", "config", "model", "pretrain_config"}
    floats = [v for v in payload["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert exported.stat().st_size < 0.6 * tiny_checkpoint.stat().st_size
    original, small = load_clip(tiny_checkpoint).eval(), load_clip(exported).eval()
    images = torch.rand(3, 1, 128, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cosine = (original.encode_image(images) * small.encode_image(images)).sum(-1)
    assert cosine.min() > 0.999


def test_shipped_weights_match_their_card():
    card = default_model.shipped_card()
    weights = default_model.shipped_weights()
    assert sha256(weights) == card["sha256"] and weights.stat().st_size == card["bytes"]
    assert weights.stat().st_size < 20e6  # the frozen stock text encoder is not stored
    assert card["data"]["generator_version"] == GENERATOR_VERSION
    assert card["data"]["synthetic"] == _as_json(DEFAULT_SYNTH.to_dict())
    # read through today's config class: a field added since the card was written takes its default
    assert ClipConfig.from_dict(card["pretrain_config"]["model"]) == default_model.recipe_config().model
    assert card["command"].startswith("python -m models.default_model")
    recipe = default_model.recipe_config().model.image
    assert dataclasses.replace(load_clip(weights).config.image, weights=recipe.weights) == recipe


@pytest.fixture(scope="module")
def check_set_cache(tmp_path_factory):
    """One cache for the check set, shared by the tests that regenerate it."""
    return tmp_path_factory.mktemp("check_cache")


@pytest.fixture()
def check_set(check_set_cache, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(check_set_cache))
    monkeypatch.delenv("MAMMO_INTERP_DATA", raising=False)
    return check_set_table()


def test_reports_name_the_shipped_model_the_same_on_every_machine(tiny_checkpoint, monkeypatch, tmp_path):
    shipped = default_model.shipped_weights()
    assert default_model.checkpoint_name(shipped) == "default_clip.pt (shipped)"
    monkeypatch.chdir(shipped.parent)  # a relative path to the same file
    assert default_model.checkpoint_name("default_clip.pt") == "default_clip.pt (shipped)"
    assert default_model.checkpoint_name(tiny_checkpoint) == str(tiny_checkpoint)


@pytest.mark.slow
def test_card_zero_shot_mass_auroc_reproduces_from_the_shipped_file(check_set):
    card = default_model.shipped_card()
    assert card["check"]["synthetic"] == _as_json(CHECK_SET.to_dict())
    size = tuple(card["pretrain_config"]["image_size"])
    scores = default_model.zero_shot_of(default_model.shipped_weights(), check_set, size)
    assert scores["mass"] == pytest.approx(card["check"]["zero_shot_auroc"]["mass"], abs=0.01)
    assert scores["mass"] > 0.75  # a model that sees masses, not the lesion-blind chance level


def test_ship_trains_the_recipe_and_writes_weights_and_card(tiny_masses, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MAMMO_INTERP_DATA", str(tiny_masses))  # the default set and the check set
    recipe = {"description": "tiny", "pretrain": {"epochs": 1, "image_size": [64, 40], "batch_size": 8,
                                                   "model": {"embed_dim": 16}}}
    monkeypatch.setattr(default_model, "read_recipe", lambda: recipe)
    config = default_model.ShipConfig(out=str(tmp_path / "run"), weights_dir=str(tmp_path / "weights"),
                                      progress=False)
    card = _as_json(default_model.ship(config))
    weights = tmp_path / "weights" / default_model.WEIGHTS_FILE
    assert json.loads((tmp_path / "weights" / default_model.CARD_FILE).read_text()) == card
    assert card["sha256"] == sha256(weights) and card["kept_epoch"] == 1
    assert card["pretrain_config"]["image_size"] == [64, 40] and card["recipe"] == recipe
    assert set(card["test_zero_shot_auroc"]) == {"mass", "calcification", "architectural_distortion", "density"}
    assert card["validation"]["val_loss"] > 0


@pytest.mark.slow
def test_shipped_reference_matches_its_card_and_its_check_set_auroc_reproduces(check_set):
    card = reference.shipped_reference_card()
    weights = reference.shipped_reference()
    assert sha256(weights) == card["sha256"] and weights.stat().st_size == card["bytes"] < 20e6
    assert card["data"]["synthetic"] == _as_json(DEFAULT_SYNTH.to_dict())
    assert card["check"]["synthetic"] == _as_json(CHECK_SET.to_dict())
    scores = reference.finding_aurocs(weights, check_set)
    for finding, value in card["check"]["auroc"].items():
        assert scores[finding] == pytest.approx(value, abs=0.01), finding
    assert scores["Mass"] > 0.8  # the ceiling sees masses


def test_the_recipe_is_the_ablation_variant_it_names():
    """The shipped recipe is the recipe ablation's base with one named variant's changes, so the
    ablation table's row for that variant is the shipped model's validation evidence."""
    from analyses.recipe_ablation import merged, read_recipes

    recipe = default_model.read_recipe()
    ablation = read_recipes(None)
    variant = {v["name"]: v["changes"] for v in ablation["variants"]}[recipe["variant"]]
    assert recipe["pretrain"] == merged(ablation["base"], variant)
