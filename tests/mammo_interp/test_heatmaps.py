"""Heatmap methods: channel weighting by hand, Grad-CAM against a hand-written Grad-CAM, priors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from mammo_interp import heatmaps as hm
from mammo_interp import methods
from mammo_interp.methods import MethodContext, cams, channels
from mammo_interp.methods.gscorecam import GScoreCAM
from mammo_interp.methods.prior import BREAST_PRIOR


def _image_maps(name: str, target: nn.Module, layer: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                context: MethodContext = MethodContext(), batch_size: int = 2) -> torch.Tensor:
    """A registered method's heatmaps of ``images``, as FActOR's study makes them."""
    method = replace(methods.get(name), batch_size=batch_size)
    return hm.model_heatmaps(method, context, target, layer, lambda part: images[part], len(images), masks)


def test_normalize_in_mask_scales_inside_and_zeroes_outside():
    heat = torch.tensor([[[5.0, 1.0], [3.0, 100.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    out = hm.normalize_in_mask(heat, mask)
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0], [0.5, 0.0]]]))
    flat = hm.normalize_in_mask(torch.ones(1, 2, 2), mask)
    assert float(flat.abs().sum()) == 0.0


def test_normalize_in_mask_matches_a_per_image_numpy_loop_across_chunks():
    generator = torch.Generator().manual_seed(0)
    heat = torch.randn(7, 5, 6, generator=generator)
    masks = torch.rand(7, 5, 6, generator=generator) > 0.4
    masks[2] = False            # no tissue: all 0
    heat[3] = 2.0               # flat map: all 0
    expected = np.zeros((7, 5, 6), np.float32)
    for i, (h, m) in enumerate(zip(heat.numpy(), masks.numpy())):
        if m.any() and np.ptp(h[m]) > 0:
            expected[i][m] = (h[m] - h[m].min()) / np.ptp(h[m])
    np.testing.assert_allclose(hm.normalize_in_mask(heat, masks, chunk=3).numpy(), expected, atol=1e-6)
    assert hm.normalize_in_mask(heat[:0], masks[:0]).shape == (0, 5, 6)


def test_channel_heatmaps_is_the_weighted_sum_upsampled():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # top-left
    maps[0, 1, 1, 1] = 1.0  # bottom-right
    maps[0, 2] = 5.0        # constant channel, weight 0
    weights = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    out = hm.channel_heatmaps(maps, weights, mask)  # same size: no interpolation change
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0], [0.0, 0.5]]]))
    big = hm.channel_heatmaps(maps, weights, torch.ones(1, 8, 8, dtype=torch.bool))
    assert big.shape == (1, 8, 8)
    assert np.unravel_index(int(big[0].argmax()), (8, 8)) == (0, 0)


def test_top_k_and_random_weights():
    scores = torch.tensor([[0.1, 0.9, -0.5, 0.3], [0.8, 0.1, 0.2, 0.0]])
    weights = channels.top_k_weights(scores, 2)
    assert (weights > 0).sum(dim=1).tolist() == [2, 2]
    assert weights[0, 1] > weights[0, 3] > 0 and weights[0, 0] == 0
    assert weights[1, 0] > 0 and weights[1, 2] > 0
    random = channels.random_weights(50, 10, 3, seed=1)
    assert (random.sum(dim=1) == 3).all()
    assert torch.equal(random, channels.random_weights(50, 10, 3, seed=1))
    assert not torch.equal(random, channels.random_weights(50, 10, 3, seed=2))


def test_breast_prior_peaks_deep_inside_the_mask():
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 2:18, 0:12] = True
    prior = hm.mask_heatmaps(BREAST_PRIOR, mask)
    y, x = np.unravel_index(int(prior[0].argmax()), (20, 20))
    assert mask[0, y, x] and 6 <= y <= 13 and 3 <= x <= 8
    assert float(prior[0][~mask[0]].abs().sum()) == 0.0


class _Tower(nn.Module):
    """A toy image tower with a conv feature layer, standing in for the CLIP image encoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.features(images).mean(dim=(2, 3))
        return nn.functional.normalize(self.head(pooled), dim=-1)


def test_grad_cam_matches_a_hand_written_grad_cam():
    tower = _Tower()
    text = torch.tensor([1.0, -0.5, 0.2])
    target = hm.SimilarityTarget(tower, text)
    images = torch.rand(3, 1, 8, 8)
    masks = torch.ones(3, 8, 8, dtype=torch.bool)
    ours = _image_maps("gradcam", target, tower.features, images, masks)

    acts = tower.features(images).detach().requires_grad_(True)
    similarity = nn.functional.normalize(tower.head(acts.mean(dim=(2, 3))), dim=-1) @ nn.functional.normalize(text, dim=0)
    grads, = torch.autograd.grad(similarity.sum(), acts)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)).detach()
    expected = hm.normalize_in_mask(cam, masks)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_integrated_gradients_completeness_on_the_target():
    from captum.attr import IntegratedGradients

    tower = _Tower()
    target = hm.SimilarityTarget(tower, torch.tensor([0.3, 0.4, -1.0]))
    images = torch.rand(2, 1, 8, 8)
    attributions = IntegratedGradients(target).attribute(images, baselines=torch.zeros_like(images), n_steps=64)
    gap = target(images) - target(torch.zeros_like(images))
    assert torch.allclose(attributions.sum(dim=(1, 2, 3)), gap.detach(), atol=5e-3)
    maps = _image_maps("integrated_gradients", target, None, images, torch.ones(2, 8, 8, dtype=torch.bool),
                       MethodContext(ig_steps=4, ig_sigma=1.0))
    assert maps.shape == (2, 8, 8) and float(maps.max()) == pytest.approx(1.0)


class _StridedTower(_Tower):
    """The toy tower with a stride-2 feature layer, so CAMs are upsampled (4 x 4 -> 8 x 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU())


def _activations_and_gradients(tower: _Tower, text: torch.Tensor, images: torch.Tensor):
    acts = tower.features(images).detach().requires_grad_(True)
    similarity = nn.functional.normalize(tower.head(acts.mean(dim=(2, 3))), dim=-1) @ nn.functional.normalize(text, dim=0)
    grads, = torch.autograd.grad(similarity.sum(), acts)
    return acts.detach(), grads


def test_layercam_is_pytorch_grad_cams_layercam_and_the_formula():
    from pytorch_grad_cam import LayerCAM

    tower, text = _StridedTower(), torch.tensor([0.5, 1.0, -0.3])
    images, masks = torch.rand(3, 1, 8, 8), torch.ones(3, 8, 8, dtype=torch.bool)
    target = hm.SimilarityTarget(tower, text)
    ours = _image_maps("layercam", target, tower.features, images, masks)
    assert all(p.grad is None for p in tower.parameters())  # no backward into the weights
    library = LayerCAM(model=target, target_layers=[tower.features])
    expected = hm.normalize_in_mask(torch.from_numpy(library(input_tensor=images, targets=[cams._score] * 3)), masks)
    library.activations_and_grads.release()
    assert torch.allclose(ours, expected, atol=1e-4)
    acts, grads = _activations_and_gradients(tower, text, images)
    by_hand = hm.normalize_in_mask(hm.upsample(torch.relu((torch.relu(grads) * acts).sum(dim=1)), (8, 8)), masks)
    assert torch.allclose(ours, by_hand, atol=1e-5)


def test_gscorecam_over_every_channel_is_pytorch_grad_cams_score_cam():
    from pytorch_grad_cam import ScoreCAM

    tower, text = _StridedTower(), torch.tensor([0.5, 1.0, -0.3])
    target = hm.SimilarityTarget(tower, text).eval()
    images = torch.rand(2, 1, 8, 8)
    score_cam = ScoreCAM(model=target, target_layers=[tower.features])
    every_channel = GScoreCAM(model=target, target_layers=[tower.features], top_k=4, logit_scale=1.0)
    expected = score_cam(input_tensor=images, targets=[cams._score] * 2)
    ours = every_channel(input_tensor=images, targets=[cams._score] * 2)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_gscorecam_keeps_the_channels_of_largest_gradient():
    tower, text = _StridedTower(), torch.tensor([0.5, 1.0, -0.3])
    target = hm.SimilarityTarget(tower, text).eval()
    images = torch.rand(2, 1, 8, 8)
    acts, grads = _activations_and_gradients(tower, text, images)
    cam = GScoreCAM(model=target, target_layers=[tower.features], top_k=1)
    weights = cam.get_cam_weights(images, tower.features, [cams._score] * 2, acts.numpy(), grads.numpy())
    best = grads.mean(dim=(2, 3)).argmax(dim=1)
    assert (weights.argmax(axis=1) == best.numpy()).all() and np.allclose(weights.sum(axis=1), 1.0)
    assert (np.count_nonzero(weights, axis=1) == 1).all()
    with torch.no_grad():
        maps = _image_maps("gscorecam", target, tower.features, images, torch.ones(2, 8, 8, dtype=torch.bool),
                           MethodContext(cam_channels=1))
    single = hm.normalize_in_mask(hm.upsample(torch.relu(acts[torch.arange(2), best]), (8, 8)),
                                  torch.ones(2, 8, 8, dtype=torch.bool))
    assert torch.allclose(maps, single, atol=1e-4)
