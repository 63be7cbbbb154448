"""Pretraining end to end on a tiny synthetic set: a killed run resumes to the uninterrupted result,
every level/loss, DDP with two gloo processes, and that training beats an untrained model on retrieval."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import models.pretrain as pretrain_module
from models.checkpoints import load_checkpoint, load_clip
from models.clip import ClipConfig, ClipModel
from models.paired_text import validation_zero_shot
from models.pretrain import PretrainConfig, PretrainObjective, build_dataset, evaluate_retrieval, pretrain
from models.text import FINDING_TASKS, class_prompts

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


RESUME_EPOCHS = 3


def _pretrain_process(data: str, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``python -m models.pretrain`` with the flags that give ``_config(data, out, epochs=RESUME_EPOCHS)``,
    on as many threads as this process (equal thread counts give bit-identical CPU kernels); its
    output goes to ``log`` (a pipe nobody reads could fill and stall it)."""
    flags = ["--data", data, "--out", str(out), "--model-embed-dim", str(SMALL.embed_dim),
             "--image-size", "128", "80", "--epochs", str(RESUME_EPOCHS), "--batch-size", "8",
             "--validation-fraction", "0.2", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with log.open("a") as stream:
        return subprocess.Popen([sys.executable, "-m", "models.pretrain", *flags], env=env,
                                stdout=stream, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def uninterrupted(tiny_synthetic, tmp_path_factory) -> Path:
    """The output folder of a run that nothing interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert pretrain(_config(tiny_synthetic, out, epochs=RESUME_EPOCHS)) == out / "best.pt"
    # epoch 1 improves the validation loss, so it writes best.pt and last.pt (the crash test needs that)
    val_loss = pd.read_csv(out / "metrics.csv")["val_loss"]
    assert val_loss[1] < val_loss[0]
    return out


def _assert_same_run(reference: Path, out: Path) -> None:
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(reference / name), load_checkpoint(out / name)
        assert a["epoch"] == b["epoch"], name
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    history = pd.read_csv(out / "metrics.csv")
    assert history["epoch"].tolist() == list(range(RESUME_EPOCHS))
    timing = ["train_samples_per_s", "embed_samples_per_s", "peak_rss_mb"]
    expected = pd.read_csv(reference / "metrics.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(history.drop(columns=timing), expected)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tiny_synthetic, uninterrupted, tmp_path):
    """SIGKILL (no handler runs, nothing flushed) during the second epoch, then ``--resume``."""
    out, log = tmp_path / "run", tmp_path / "pretrain.log"
    process = _pretrain_process(tiny_synthetic, out, log)
    deadline = time.monotonic() + 600
    while not (out / "last.pt").is_file():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 0
    resumed = _pretrain_process(tiny_synthetic, out, log, "--resume")
    assert resumed.wait(timeout=600) == 0, log.read_text()
    _assert_same_run(uninterrupted, out)


def test_crash_between_the_two_saves_of_an_epoch_resumes_to_the_uninterrupted_result(
        tiny_synthetic, uninterrupted, tmp_path, monkeypatch):
    """best.pt and last.pt are two files; a crash after the first must not leave best.pt behind."""
    saves = []
    real = pretrain_module.save_checkpoint

    def crash_on_the_last_save(path, *args, **kwargs):
        saves.append(Path(path).name)
        if len(saves) == 4:  # epoch 0: two saves; epoch 1: the first succeeds, the second crashes
            raise KeyboardInterrupt("simulated crash")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pretrain_module, "save_checkpoint", crash_on_the_last_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(tiny_synthetic, tmp_path, epochs=RESUME_EPOCHS))
    assert saves == ["best.pt", "last.pt", "best.pt", "last.pt"]
    monkeypatch.setattr(pretrain_module, "save_checkpoint", real)
    pretrain(_config(tiny_synthetic, tmp_path, epochs=RESUME_EPOCHS, resume=True))
    _assert_same_run(uninterrupted, tmp_path)


@pytest.mark.parametrize("overrides", [
    dict(level="breast", loss="multiview"),
    dict(level="exam", model=dataclasses.replace(SMALL, view_pooling="attention")),
    dict(mlm_weight=0.5, text_source="both", accumulate=2),
    dict(positive_fraction=0.5, augment=True, level="breast", loss="multiview"),
    dict(positive_fraction=0.5, augment=True, channels_last=True,
         model=dataclasses.replace(SMALL, image=dataclasses.replace(SMALL.image, pooling="lse",
                                                                     frozen_through="blocks.1"))),
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


def test_balanced_sampling_draws_the_requested_share_of_findings(tiny_synthetic, tmp_path):
    config = _config(tiny_synthetic, tmp_path, positive_fraction=0.5, balance_findings=("Mass",))
    dataset = build_dataset(config, pretrain_module.load_splits(config.data, 0.2, 0).train)
    targets = dataset.finding_targets(("Mass",))[:, 0]
    assert 0 < targets.mean() < 0.5  # masses are a minority of the images
    order = list(pretrain_module._loader(dataset, config, 0, pretrain_module.DistributedContext(), True).sampler)
    assert len(order) == len(dataset) and targets[order].mean() == pytest.approx(0.5, abs=1 / len(order))
    again = list(pretrain_module._loader(dataset, config, 0, pretrain_module.DistributedContext(), True).sampler)
    assert order == again
    ranks = [list(pretrain_module._loader(dataset, config, 0, pretrain_module.DistributedContext(r, 2), True).sampler)
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and sorted(ranks[0] + ranks[1]) == sorted(order[:len(order) // 2 * 2])


@pytest.mark.slow
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


@pytest.mark.slow
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


class _Targets:
    """A dataset stand-in: only the finding targets and densities :func:`validation_zero_shot` reads."""

    def __init__(self, targets, densities):
        self.targets, self.densities = targets, densities

    def finding_targets(self, findings):
        assert findings == tuple(FINDING_TASKS.values())
        return self.targets

    def first_view_values(self, column):
        assert column == "density"
        return self.densities


def test_validation_zero_shot_scores_the_finding_sentence_against_its_negation(monkeypatch):
    """Stub text embeddings: each task's finding sentence on one axis, its negation on the next, so an
    image's score is known; AUROC is then counted by hand over positive/negative pairs."""
    clip = ClipModel(SMALL)
    prompts = {task: class_prompts(task) for task in FINDING_TASKS}
    axis = {}
    for k, task in enumerate(FINDING_TASKS):
        label = task.replace("_", " ")
        axis[prompts[task][f"no {label}"][0]], axis[prompts[task][label][0]] = 2 * k + 1, 2 * k
    monkeypatch.setattr(clip, "encode_text", lambda texts: torch.nn.functional.one_hot(
        torch.tensor([axis[t] for t in texts]), SMALL.embed_dim).float())
    image = torch.zeros(4, SMALL.embed_dim)
    image[:, 0] = torch.tensor([0.9, 0.2, 0.5, 0.1])  # mass sentence
    image[:, 1] = torch.tensor([0.0, 0.0, 0.6, 0.0])  # its negation: image 2 scores -0.1
    targets = np.zeros((4, len(FINDING_TASKS)))
    targets[[0, 2], 0] = 1  # images 0 and 2 hold a mass: scores 0.9, -0.1 against 0.2, 0.1
    targets[:, 1] = 1  # every image has calcifications: AUROC undefined
    density_axes = {p[0]: 8 + k for k, p in enumerate(class_prompts("density").values())}
    axis.update(density_axes)
    density = torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.2, 0.4, 0.3, 0.0], [0.0, 0.3, 0.2, 0.1], [0.0, 0.0, 0.4, 0.3]])
    image[:, 8:12] = density
    result = validation_zero_shot(clip, image, _Targets(targets, ["A", "B", "C", "D"]))
    assert result["val_zeroshot_mass"] == pytest.approx(2 / 4)  # 0.9 beats both, -0.1 beats neither
    assert np.isnan(result["val_zeroshot_calcification"])
    probs = torch.softmax(clip.logit_scale().detach() * density, -1).numpy()
    expected = roc_auc_score([0, 1, 2, 3], probs, multi_class="ovr", average="macro")
    assert result["val_zeroshot_density"] == pytest.approx(expected)
    assert set(result) == {f"val_zeroshot_{task}" for task in (*FINDING_TASKS, "density")}
