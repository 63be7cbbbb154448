"""Pretraining end to end on a tiny synthetic set: resume equality, every level/loss, DDP with two
gloo processes, and that training beats an untrained model on retrieval."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import models.pretrain as pretrain_module
from models.checkpoints import load_checkpoint, load_clip
from models.clip import ClipConfig, ClipModel
from models.pretrain import PretrainConfig, PretrainObjective, build_dataset, evaluate_retrieval, pretrain

SMALL = ClipConfig(embed_dim=32)


def _config(data: str, out: Path, **overrides) -> PretrainConfig:
    values = dict(data=data, out=str(out), model=SMALL, image_size=(128, 80), epochs=2, batch_size=8,
                  progress=False, validation_fraction=0.2)
    values.update(overrides)
    return PretrainConfig(**values)


def test_config_validation():
    with pytest.raises(ValueError, match="level 'breast'"):
        PretrainConfig(loss="multiview")
    with pytest.raises(ValueError, match="level"):
        PretrainConfig(level="patient")


def test_resumed_run_equals_uninterrupted_run(tiny_synthetic, tmp_path, monkeypatch):
    full = pretrain(_config(tiny_synthetic, tmp_path / "full"))
    calls = {"n": 0}
    real = pretrain_module.evaluate_retrieval

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "evaluate_retrieval", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(tiny_synthetic, tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 0
    monkeypatch.setattr(pretrain_module, "evaluate_retrieval", real)
    pretrain(_config(tiny_synthetic, tmp_path / "resumed", resume=True))
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    history = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert history["epoch"].tolist() == [0, 1]
    timing = ["train_samples_per_s", "embed_samples_per_s", "peak_rss_mb"]
    expected = pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(history.drop(columns=timing), expected)
    assert full.name == "best.pt" and full.is_file()


@pytest.mark.parametrize("overrides", [
    dict(level="breast", loss="multiview"),
    dict(level="exam", model=dataclasses.replace(SMALL, view_pooling="attention")),
    dict(mlm_weight=0.5, text_source="both", accumulate=2),
])
def test_levels_and_losses_train(tiny_synthetic, tmp_path, overrides):
    config = _config(tiny_synthetic, tmp_path, epochs=1, **overrides)
    best = pretrain(config)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert torch.isfinite(torch.tensor(row["train_total"])) and row["val_r1"] >= 0
    state = load_checkpoint(best)
    if config.level != "image":
        assert "multiview" in state["extra_modules"]
    if config.mlm_weight:
        assert "fusion" in state["extra_modules"] and row["train_mlm"] > 0
    assert isinstance(load_clip(best), ClipModel)


def test_training_beats_untrained_model_on_retrieval(tiny_synthetic, tmp_path):
    # Frozen image encoder: 16 studies at 128 px are too few to move the backbone in a test's
    # budget, but enough for the projections to align ImageNet features with the texts.
    model = dataclasses.replace(SMALL, freeze_image=True)
    config = _config(tiny_synthetic, tmp_path, model=model, epochs=25, patience=100)
    pretrain(config)
    train_set = build_dataset(config, pretrain_module.load_splits(
        config.data, config.validation_fraction, config.seed).train)
    before = evaluate_retrieval(PretrainObjective(ClipModel(model), config), train_set, config)
    after = evaluate_retrieval(PretrainObjective(load_clip(tmp_path / "last.pt"), config), train_set, config)
    assert after["val_loss"] < before["val_loss"]
    assert after["val_r1"] > max(before["val_r1"], after["val_r1_chance"])
    assert after["val_mrr"] > before["val_mrr"]


def test_ddp_two_gloo_processes(tiny_synthetic, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
        "-m", "models.pretrain", "--data", tiny_synthetic, "--out", str(tmp_path), "--epochs", "1",
        "--batch-size", "4", "--image-size", "128", "80", "--model-embed-dim", "16", "--no-progress",
        "--validation-fraction", "0.2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert len(history) == 1 and history["train_total"].notna().all()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0
