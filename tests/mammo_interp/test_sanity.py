"""The model-randomization check: its stages, re-initialization, similarity measures (Spearman
cross-checked against ranks by hand) and verdicts on a planted model-bound and model-blind method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from mammo_interp import sanity
from models.clip import ClipConfig, ClipModel
from models.encoders import ImageEncoderConfig


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    torch.manual_seed(0)
    return ClipModel(ClipConfig(image=ImageEncoderConfig(weights="none"), embed_dim=16)).eval()


def test_stages_run_from_the_projection_down_to_the_stem(clip):
    names = [stage.name for stage in sanity.randomization_stages(clip)]
    blocks = [f"blocks.{i}" for i in range(len(clip.image_encoder.backbone.blocks) - 1, -1, -1)]
    assert names == ["image_projection", "bn2", "conv_head", *blocks, "bn1", "conv_stem"]


def test_reinitialize_changes_its_stage_only_and_is_seeded(clip):
    model = ClipModel(ClipConfig(image=ImageEncoderConfig(weights="none"), embed_dim=16))
    model.load_state_dict(clip.state_dict())
    stage = next(s for s in sanity.randomization_stages(model) if s.name == "blocks.6")
    sanity.reinitialize(stage, seed=5)
    changed = {name for name, value in model.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, clip.state_dict()[name])}
    assert changed and all(name.startswith("image_encoder.backbone.blocks.6.") for name in changed)
    again = ClipModel(ClipConfig(image=ImageEncoderConfig(weights="none"), embed_dim=16))
    again.load_state_dict(clip.state_dict())
    sanity.reinitialize(next(s for s in sanity.randomization_stages(again) if s.name == "blocks.6"), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_spearman_is_the_correlation_of_ranks_over_breast_pixels_and_ssim_is_one_for_equal_maps():
    generator = np.random.default_rng(0)
    a, b = generator.random((2, 24, 16)), generator.random((2, 24, 16))
    b[1] = a[1] ** 3 + 0.1 * b[1]
    masks = np.zeros((2, 24, 16), dtype=bool)
    masks[:, 4:20, 2:14] = True
    frame = sanity.map_similarity(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(masks))
    for i in range(2):
        by_hand = np.corrcoef(rankdata(a[i][masks[i]]), rankdata(b[i][masks[i]]))[0, 1]
        assert frame.loc[i, "spearman"] == pytest.approx(by_hand, abs=1e-12)
    assert abs(frame.loc[0, "spearman"]) < 0.2 and frame.loc[1, "spearman"] > 0.9
    same = sanity.map_similarity(torch.from_numpy(a), torch.from_numpy(a), torch.from_numpy(masks))
    assert np.allclose(same["spearman"], 1) and np.allclose(same["ssim"], 1)
    flat = sanity.map_similarity(torch.from_numpy(a), torch.zeros(2, 24, 16), torch.from_numpy(masks))
    assert flat["spearman"].isna().all()


def test_a_map_made_from_the_weights_passes_and_one_blind_to_them_fails(clip):
    model = ClipModel(ClipConfig(image=ImageEncoderConfig(weights="none"), embed_dim=16)).eval()
    model.load_state_dict(clip.state_dict())
    image = torch.rand(3, 12, 16)
    masks = torch.ones(3, 12, 16, dtype=torch.bool)

    def heatmaps() -> dict[str, torch.Tensor]:
        weights = model.image_encoder.backbone.conv_stem.weight.detach().flatten()[:12 * 16].reshape(12, 16)
        bound = (weights - weights.min()) / (weights.max() - weights.min())
        return {"model-bound": bound.expand(3, -1, -1), "model-blind": image}

    stages = sanity.randomization_stages(model)
    long, examples = sanity.cascading_randomization(model, heatmaps, masks, seed=0, stages=stages, progress=False)
    assert len(long) == 2 * 3 * len(stages) and set(long["depth"]) == set(range(1, len(stages) + 1))
    assert all(len(maps) == len(stages) + 1 for maps in examples.values())
    bound = long[long["method"] == "model-bound"]
    assert (bound[bound["depth"] < len(stages)]["spearman"] == 1).all()  # the stem is randomized last
    verdict = sanity.randomization_verdict(long).set_index("method")
    assert bool(verdict.loc["model-bound", "passes"]) and not bool(verdict.loc["model-blind", "passes"])
    assert verdict.loc["model-blind", "spearman"] == pytest.approx(1)


def test_verdict_counts_a_constant_map_as_passing():
    long = pd.DataFrame({"method": ["m", "m"], "depth": [1, 1], "spearman": [np.nan, np.nan], "ssim": [0.1, 0.2]})
    assert bool(sanity.randomization_verdict(long).loc[0, "passes"])


def test_plain_modules_without_a_reset_are_left_alone():
    stage = sanity.Stage("x", (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)),))
    before = [p.clone() for p in stage.modules[0].parameters()]
    sanity.reinitialize(stage, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(before, stage.modules[0].parameters()))
