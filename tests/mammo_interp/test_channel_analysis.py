"""Channel box energy by hand, the oracle channel, and FActOR's ranking against it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_interp.channel_analysis import channel_box_energy, channel_diagnostics, oracle_channel
from mammo_interp.features import FeatureSet
from mammo_interp.mapper import ChannelMapper


def _features() -> FeatureSet:
    """Two 8 x 8 images with a mass box over the top-left 4 x 4 quarter (2 x 2 feature cells);
    channel 0 fires only there, channel 1 only in the bottom-right, channel 2 everywhere."""
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0, :2, :2] = 1.0
    maps[:, 1, 2:, 2:] = 1.0
    maps[:, 2] = 1.0
    boxes = [np.array([[0, 0, 4, 4]], np.float32)] * 2
    labels = [np.array([0])] * 2
    return FeatureSet(maps, ["a", "b"], boxes, labels, torch.ones(2, 8, 8, dtype=torch.bool), [{}] * 2, "head")


def test_box_energy_and_oracle_by_hand():
    energy = channel_box_energy(_features(), 0)
    assert torch.allclose(energy, torch.tensor([1.0, 0.0, 0.25]))
    assert oracle_channel(_features(), 0) == 0
    with pytest.raises(ValueError):
        channel_box_energy(_features(), 3)


def test_diagnostics_report_the_oracle_rank_in_factor_order():
    mapper = ChannelMapper(spatial=16, embed_dim=4, hidden=4).eval()
    text = torch.tensor([1.0, 0.0, 0.0, 0.0])
    result = channel_diagnostics(mapper, _features(), text, 0)
    alignment = result["alignment"]
    assert result["oracle_channel"] == 0
    assert result["oracle_rank_by_alignment"] == int((alignment > alignment[0]).sum())
    assert -1.0 <= result["spearman_alignment_vs_box_energy"] <= 1.0
