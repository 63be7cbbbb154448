"""The default model: shipped weights on the default set; the recipe retrained once per dataset and
reused, concurrent callers waiting for one training."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import models.default_model as default_model


def test_trains_once_and_reuses_even_when_called_concurrently(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path))
    calls = []

    def fake_pretrain(config):
        calls.append(config)
        time.sleep(0.3)  # long enough for the second caller to arrive mid-training
        best = Path(config.out) / "best.pt"
        best.write_bytes(b"weights")
        return best

    monkeypatch.setattr(default_model, "pretrain", fake_pretrain)
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_model.train_default(progress=False)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and calls[0].resume and calls[0].epochs == default_model.recipe_config().epochs
    assert results[0] == results[1] and results[0].read_bytes() == b"weights"
    assert default_model.train_default(progress=False) == results[0] and len(calls) == 1
    assert (results[0].parent / default_model.COMPLETE_MARKER).is_file()


def test_run_dir_depends_on_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path))
    other = default_model.recipe_config(epochs=1)
    assert default_model.default_run_dir() != default_model.default_run_dir(config=other)
    assert default_model.default_run_dir().parent == tmp_path / "models"


def test_resolve_checkpoint_prefers_a_given_file_and_names_a_missing_one(tmp_path, monkeypatch):
    given = tmp_path / "mine.pt"
    given.write_bytes(b"weights")
    monkeypatch.delenv("MAMMO_INTERP_DATA", raising=False)
    trained = []
    monkeypatch.setattr(default_model, "train_default",
                        lambda data, config, progress: trained.append(data) or tmp_path / f"trained-{data}.pt")
    assert default_model.resolve_checkpoint(str(given)) == given
    assert default_model.resolve_checkpoint(None) == default_model.shipped_weights() and not trained
    assert default_model.resolve_checkpoint("retrain") == tmp_path / "trained-None.pt"
    assert default_model.resolve_checkpoint(None, data="/my/vindr") == tmp_path / "trained-/my/vindr.pt"
    monkeypatch.setenv("MAMMO_INTERP_DATA", str(tmp_path))
    assert default_model.resolve_checkpoint(None) == tmp_path / "trained-None.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt: no such file"):
        default_model.resolve_checkpoint(str(tmp_path / "nope.pt"))


def test_the_recipe_trains_on_the_analysis_device_in_the_same_run_folder(tmp_path, monkeypatch):
    """A GPU machine's `factor --device cpu` on a user's data once trained the recipe on the GPU
    (the recipe's device is `auto`): the analysis's device, precision and workers now reach it,
    and the cached run is found whatever device trained it."""
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path))
    monkeypatch.setattr(default_model, "default_data_root", lambda data, progress: Path(data))
    used = []

    def fake_pretrain(config):
        used.append((config.device, config.precision, config.workers))
        (Path(config.out) / "best.pt").write_bytes(b"weights")
        return Path(config.out) / "best.pt"

    monkeypatch.setattr(default_model, "pretrain", fake_pretrain)
    first = default_model.resolve_checkpoint(None, data=str(tmp_path), device="cpu", precision="fp32", workers=3)
    assert used == [("cpu", "fp32", 3)]
    again = default_model.resolve_checkpoint(None, data=str(tmp_path), device="auto", precision="fp32", workers=0)
    assert again == first and len(used) == 1
