"""FActOR's channel mapper: per-channel mapping, the MIL contrastive loss, learning a planted channel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mammo_interp.mapper import (ChannelMapper, MapperConfig, image_scores, input_scaling, mil_contrastive_loss,
                                  train_mapper)


def test_mapper_maps_each_channel_of_each_image_separately():
    torch.manual_seed(0)
    mapper = ChannelMapper(spatial=12, embed_dim=8, hidden=16, dropout=0.0).eval()
    maps = torch.randn(3, 5, 3, 4)
    torch.set_grad_enabled(False)
    try:
        _check_separation(mapper, maps)
    finally:
        torch.set_grad_enabled(True)


def _check_separation(mapper: ChannelMapper, maps: torch.Tensor) -> None:
    out = mapper(maps)
    assert out.shape == (3, 5, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3, 5), atol=1e-5)
    # One channel's map alone decides its embedding: same map, same vector, wherever it sits.
    alone = mapper(maps[1:2, 3:4])
    assert torch.allclose(alone[0, 0], out[1, 3], atol=1e-6)
    changed = maps.clone()
    changed[2, 1] += 1.0
    diff = (mapper(changed) - out).abs().sum(dim=-1)
    assert diff[2, 1] > 0
    diff[2, 1] = 0
    assert float(diff.max()) == 0.0


def test_mapper_rejects_other_map_sizes():
    mapper = ChannelMapper(spatial=12, embed_dim=4)
    with pytest.raises(ValueError, match="12"):
        mapper(torch.zeros(1, 2, 4, 4))


def test_mil_contrastive_loss_hand_computed():
    scores = torch.tensor([2.0, 0.0, 1.0, -1.0])
    positive = torch.tensor([True, False, True, False])
    negatives = math.exp(0.0) + math.exp(-1.0)
    expected = np.mean([-math.log(math.exp(s) / (math.exp(s) + negatives)) for s in (2.0, 1.0)])
    assert float(mil_contrastive_loss(scores, positive)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        mil_contrastive_loss(scores, torch.ones(4, dtype=torch.bool))


def _planted(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Images with the attribute have one channel (a random one) holding a bright blob; the other
    channels and the negatives hold noise."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.3, size=(n, 6, 6, 6)).astype(np.float32)
    positive = rng.random(n) < 0.4
    for i in np.flatnonzero(positive):
        y, x = rng.integers(1, 5, size=2)
        maps[i, rng.integers(6), y - 1:y + 2, x - 1:x + 2] += 3.0
    return torch.from_numpy(maps), positive


def test_train_mapper_finds_a_planted_channel():
    train_maps, train_positive = _planted(160, 0)
    val_maps, val_positive = _planted(60, 1)
    text = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(2)), dim=0)
    config = MapperConfig(hidden=32, epochs=25, lr=3e-3, positives_per_batch=8, negatives_per_batch=16)
    mapper, history = train_mapper(train_maps, train_positive, val_maps, val_positive, text, config,
                                   seed=0, progress=False)
    best = min(history, key=lambda row: row["val_loss"])
    assert best["val_auroc"] > 0.9
    # The best-aligned channel of a positive image is the planted one.
    scores = mapper.alignment(val_maps, text)
    planted = val_maps.flatten(2).amax(dim=2).argmax(dim=1)
    hits = (scores.argmax(dim=1) == planted)[torch.from_numpy(val_positive)].float().mean()
    assert hits > 0.8
    assert image_scores(mapper, val_maps, text, 0.07).shape == (60,)


def test_train_mapper_is_seeded_and_leaves_the_global_rng_alone():
    maps, positive = _planted(40, 0)
    text = torch.nn.functional.normalize(torch.ones(16), dim=0)
    config = MapperConfig(hidden=8, epochs=2, positives_per_batch=4, negatives_per_batch=8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, _ = train_mapper(maps, positive, maps, positive, text, config, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # another global state: the same mapper
    second, _ = train_mapper(maps, positive, maps, positive, text, config, seed=5, progress=False)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_train_mapper_needs_both_classes():
    maps, _ = _planted(20, 0)
    with pytest.raises(ValueError, match="validation"):
        train_mapper(maps, np.arange(20) % 2 == 0, maps, np.zeros(20, bool), torch.ones(4),
                     MapperConfig(epochs=1), progress=False)


@pytest.mark.parametrize("training", [False, True])
def test_alignment_shortcut_equals_the_plain_cosine(training):
    mapper = ChannelMapper(spatial=20, embed_dim=12, hidden=8, dropout=0.3, scale=2.0).train(training)
    maps, text = torch.randn(4, 7, 4, 5), torch.randn(12)
    torch.manual_seed(3)  # same dropout masks for both
    fast = mapper.alignment(maps, text)
    torch.manual_seed(3)
    plain = mapper(maps) @ torch.nn.functional.normalize(text, dim=0)
    assert torch.allclose(fast, plain, atol=1e-5)
    fast.sum().backward()
    fast_grad = mapper.mlp[0].weight.grad.clone()
    mapper.zero_grad()
    plain.sum().backward()
    assert torch.allclose(fast_grad, mapper.mlp[0].weight.grad, atol=1e-4)


def test_channel_scaling_matches_numpy_and_global_scaling_is_the_published_one():
    rng = np.random.default_rng(4)
    maps = torch.from_numpy((rng.normal(size=(300, 4, 3, 5)) * np.array([1, 10, 100, 0.1])[None, :, None, None]
                             + np.array([0, 5, -50, 2])[None, :, None, None]).astype(np.float16))
    offset, scale = input_scaling(maps, "channel", batch_size=64)
    per_channel = maps.float().numpy().transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(offset.numpy(), per_channel.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scale.numpy(), per_channel.std(axis=1, ddof=1), rtol=1e-5)
    mapper = ChannelMapper(spatial=15, embed_dim=4, dropout=0.0, scale=scale, offset=offset)
    standardized = mapper._flat(maps).transpose(0, 1).reshape(4, -1)
    np.testing.assert_allclose(standardized.mean(dim=1).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(dim=1).numpy(), 1.0, atol=1e-4)
    offset, scale = input_scaling(maps, "global")
    assert float(offset) == 0.0 and float(scale) == pytest.approx(float(maps[:256].float().std()))


def test_published_scaling_keeps_mapper_keys_and_other_spellings_are_refused():
    assert "standardize" not in MapperConfig().key()
    assert MapperConfig(standardize="channel").key()["standardize"] == "channel"
    with pytest.raises(ValueError, match="mapper standardize: unknown 'channels'; valid: global, channel"):
        MapperConfig(standardize="channels")


def _loud_channels(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Two loud channels of pure noise (std 1000 and 300) beside quiet ones; positives hold a blob
    (+0.6) in the quiet channel 3: a backbone whose channels differ in magnitude by 10^4, so one
    global std leaves the quiet channels' inputs near zero."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.1, size=(n, 6, 6, 6)).astype(np.float32)
    maps[:, 0] = rng.normal(50, 1000, size=(n, 6, 6))
    maps[:, 1] = rng.normal(-30, 300, size=(n, 6, 6))
    positive = rng.random(n) < 0.4
    for i in np.flatnonzero(positive):
        y, x = rng.integers(1, 5, size=2)
        maps[i, 3, y - 1:y + 2, x - 1:x + 2] += 0.6
    return torch.from_numpy(maps), positive


def test_channel_standardization_finds_a_quiet_channel_beside_loud_ones():
    train_maps, train_positive = _loud_channels(200, 0)
    val_maps, val_positive = _loud_channels(80, 1)
    text = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(2)), dim=0)
    results = {}
    for standardize in ("global", "channel"):
        config = MapperConfig(hidden=32, epochs=25, lr=3e-3, positives_per_batch=8, negatives_per_batch=16,
                              standardize=standardize)
        mapper, history = train_mapper(train_maps, train_positive, val_maps, val_positive, text, config,
                                       seed=0, progress=False)
        best = min(history, key=lambda row: row["val_loss"])
        chosen = mapper.alignment(val_maps, text).argmax(dim=1)[torch.from_numpy(val_positive)]
        results[standardize] = (best["val_auroc"], float((chosen == 3).float().mean()))
    assert results["channel"][0] > 0.9 and results["channel"][1] > 0.8, results
    assert results["global"][0] < 0.7, results  # one global std: the quiet channel is not found
