"""Training plumbing: schedule values, early stopping, metrics history files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from models.encoders import ImageEncoder, ImageEncoderConfig
from models.training import (EarlyStopping, MetricsHistory, channels_last, cosine_with_warmup, epoch_generator,
                             optimizer_state, restore_optimizer_state)


def _lrs(warmup: int, total: int, steps: int, min_ratio: float = 0.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = cosine_with_warmup(optimizer, warmup, total, min_ratio)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_with_warmup_hand_values():
    lrs = _lrs(warmup=2, total=6, steps=7)
    # warm-up: (step+1)/(warmup+1) of the base LR; then cosine over the remaining 4 steps.
    assert lrs[:2] == pytest.approx([2 / 3, 4 / 3])
    assert lrs[2] == pytest.approx(2.0)
    assert lrs[3] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.0, abs=1e-12)
    assert _lrs(0, 4, 5, min_ratio=0.1)[-1] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        _lrs(5, 4, 1)


def test_early_stopping_patience_and_state():
    stopper = EarlyStopping(patience=2, mode="min")
    flags = [stopper.step(v, e) for e, v in enumerate([1.0, 0.8, 0.9, float("nan")])]
    assert flags == [True, True, False, False]
    assert stopper.should_stop and stopper.best == 0.8 and stopper.best_epoch == 1
    copy = EarlyStopping()
    copy.load_state_dict(stopper.state_dict())
    assert copy == stopper
    maximize = EarlyStopping(patience=1, mode="max")
    assert maximize.step(0.5, 0) and not maximize.step(0.4, 1) and maximize.should_stop
    with pytest.raises(ValueError):
        EarlyStopping(mode="up")


def test_epoch_generator_is_a_pure_function_of_seed_and_epoch():
    a = torch.randperm(10, generator=epoch_generator(1, 2))
    torch.manual_seed(123)  # global state must not matter
    assert torch.equal(a, torch.randperm(10, generator=epoch_generator(1, 2)))
    assert not torch.equal(a, torch.randperm(10, generator=epoch_generator(1, 3)))


def test_metrics_history_rewrites_both_files(tmp_path):
    history = MetricsHistory(tmp_path)
    history.append({"epoch": 0, "loss": 1.5})
    history.append({"epoch": 1, "loss": 1.25})
    resumed = MetricsHistory(tmp_path, history.rows[:1])  # a resume from epoch 0 drops epoch 1
    resumed.append({"epoch": 1, "loss": 1.0})
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert frame["loss"].tolist() == [1.5, 1.0]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [1.5, 1.0]


def test_channels_last_gives_the_same_outputs_in_the_other_layout():
    encoder = ImageEncoder(ImageEncoderConfig()).eval()
    images = torch.rand(2, 1, 64, 40)
    with torch.no_grad():
        expected = encoder(images)
        fast = channels_last(encoder)
        assert fast.backbone.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(channels_last(images)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scaled", [False, True])
def test_optimizer_state_round_trips_with_and_without_a_grad_scaler(scaled):
    def parts():
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        scheduler = cosine_with_warmup(optimizer, 1, 10)
        return model, optimizer, scheduler, torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1, enabled=scaled)

    model, optimizer, scheduler, scaler = parts()
    for _ in range(3):
        scaler.scale(model(torch.ones(2, 3)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    state = optimizer_state(optimizer, scheduler, scaler)
    assert ("grad_scaler" in state) == scaled
    expected_draw = torch.rand(1)
    _, optimizer2, scheduler2, scaler2 = parts()
    restore_optimizer_state(state, optimizer2, scheduler2, scaler2)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert optimizer2.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert scaler2.get_scale() == scaler.get_scale() == (64.0 if scaled else 1.0)
    assert torch.rand(1) == expected_draw
