"""The Python API end to end: a tiny model trained on planted lesions, explained by every method,
must put its heat on the lesions; inputs are left as they were; bad calls fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mammo_interp
from mammo_interp import (Attribution, BoxRule, BreastPrior, ChannelBaseline, Factor, GradCam, IntegratedGradients,
                          LayerFeatures, MapperConfig, box_metrics)

SIZE, LESION = 32, 6


def planted(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, list[np.ndarray]]:
    """``(n, 1, 32, 32)`` noise images, each with a bright 2 x 12 bar (a distractor as bright as the
    lesion, which an untrained network's heat finds as readily) and half with a bright 6 x 6 square
    (the lesion) at a random place; labels and the squares' ``xyxy`` boxes."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.4, (n, 1, SIZE, SIZE)).astype(np.float32)
    labels = np.arange(n) % 2 == 1
    boxes = []
    for i in range(n):
        x, y = rng.integers(0, SIZE - 12), rng.integers(0, SIZE - 2)
        images[i, 0, y:y + 2, x:x + 12] += 0.6
        if labels[i]:
            x, y = rng.integers(2, SIZE - LESION - 2, size=2)
            images[i, 0, y:y + LESION, x:x + LESION] += 0.6
            boxes.append(np.array([[x, y, x + LESION, y + LESION]], dtype=np.float32))
        else:
            boxes.append(np.zeros((0, 4), dtype=np.float32))
    return torch.from_numpy(images), labels, boxes


class Tiny(nn.Module):
    """A user's own model: conv features (the explained layer), max pooling, a 2-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).amax(dim=(2, 3)))


# "lesion" direction of the 2-d embedding: the cosine to it rises with the lesion logit.
LESION_TEXT = torch.tensor([-1.0, 1.0])


@pytest.fixture(scope="module")
def trained(one_torch_thread):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Tiny()
        images, labels, _ = planted(256, seed=1)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        target = torch.as_tensor(labels).long()
        for _ in range(150):
            loss = nn.functional.cross_entropy(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def peak_in_box_rate(heatmaps: torch.Tensor, boxes: list[np.ndarray]) -> float:
    hits = []
    for heatmap, box in zip(heatmaps, boxes):
        if len(box):
            y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
            x0, y0, x1, y1 = box[0]
            hits.append(x0 <= x < x1 and y0 <= y < y1)
    return float(np.mean(hits))


def test_every_method_puts_its_peak_on_the_planted_lesions(trained):
    images, labels, boxes = planted(64, seed=2)
    train, train_labels, _ = planted(128, seed=3)
    val, val_labels, _ = planted(64, seed=4)
    layer = trained.features
    factor = Factor(trained, layer, top_k=2, config=MapperConfig(epochs=10)).fit(
        train, train_labels, val, val_labels, LESION_TEXT)
    rates = {
        "factor": peak_in_box_rate(factor.attribute(images, LESION_TEXT), boxes),
        "gradcam logit": peak_in_box_rate(GradCam(trained, layer).attribute(images, 1), boxes),
        "gradcam text": peak_in_box_rate(GradCam(trained, layer).attribute(images, LESION_TEXT), boxes),
        "integrated gradients": peak_in_box_rate(
            IntegratedGradients(trained, steps=8, sigma=1.0).attribute(images, 1), boxes),
        "layercam by name": peak_in_box_rate(Attribution(trained, layer, "layercam").attribute(images, 1), boxes),
    }
    assert all(rate >= 0.8 for rate in rates.values()), rates
    # Chance: the square covers 3.5 % of the image. The prior (the centre) and Grad-CAM of the same
    # network untrained (its heat goes to the bar as readily) stay far below.
    assert peak_in_box_rate(BreastPrior().attribute(images), boxes) < 0.5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = Tiny().eval()
    assert peak_in_box_rate(GradCam(untrained, untrained.features).attribute(images, 1), boxes) < 0.5
    heatmaps = GradCam(trained, layer).attribute(images, 1)
    result = box_metrics(BoxRule(quantile=0.95, min_area=4).predict(heatmaps), boxes, heatmaps, n_boot=50)
    assert result["iou_hit@0.25"].value >= 0.7 and result["pointing_game"].value >= 0.8
    assert len(factor.history) >= 1 and {"val_auroc", "val_loss"} <= set(factor.history[0])
    by_name = Attribution(trained, layer, "factor", mapper=factor.mapper, top_k=2)
    torch.testing.assert_close(by_name.attribute(images, LESION_TEXT), factor.attribute(images, LESION_TEXT))


def test_heatmaps_are_normalized_in_the_mask_and_the_inputs_left_alone(trained):
    images, _, _ = planted(6, seed=5)
    before = images.clone()
    masks = torch.zeros(6, SIZE, SIZE, dtype=torch.bool)
    masks[:, 4:28, 2:30] = True
    for method, target in ((GradCam(trained, trained.features), LESION_TEXT),
                           (IntegratedGradients(trained, steps=2), 1),
                           (ChannelBaseline(trained, trained.features, "mean"), None),
                           (ChannelBaseline(trained, trained.features, 3), None)):
        heatmaps = method.attribute(images, target, masks)
        assert heatmaps.shape == (6, SIZE, SIZE) and heatmaps.dtype == torch.float32
        assert float(heatmaps[~masks].abs().sum()) == 0.0
        assert float(heatmaps.max()) == pytest.approx(1.0) and float(heatmaps.min()) == 0.0
    assert torch.equal(images, before) and not images.requires_grad and images.grad is None
    assert trained.training is False


def test_layer_features_stop_at_the_layer_and_match_a_direct_call(trained):
    images, _, _ = planted(5, seed=6)
    maps = LayerFeatures(trained, trained.features, batch_size=2)(images)
    assert torch.allclose(maps, trained.features(images), atol=1e-5)  # batches of 2 vs 5: rounding only
    calls = []
    handle = trained.head.register_forward_hook(lambda *args: calls.append(1))
    try:
        LayerFeatures(trained, trained.features)(images)
    finally:
        handle.remove()
    assert calls == []  # the head never ran
    with pytest.raises(ValueError, match="never ran"):
        LayerFeatures(trained, nn.Conv2d(1, 1, 1))(images)


def test_bad_calls_fail_with_a_message(trained):
    images, _, _ = planted(2, seed=7)
    with pytest.raises(RuntimeError, match="fit"):
        Factor(trained, trained.features).attribute(images, LESION_TEXT)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        GradCam(trained, trained.features).attribute(images[0], 1)
    with pytest.raises(ValueError, match="masks must be"):
        GradCam(trained, trained.features).attribute(images, 1, torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="text embedding, a class index or a function"):
        GradCam(trained, trained.features).attribute(images, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\); got \(2, 2\)"):
        GradCam(trained, trained.features).attribute(images, lambda logits: logits)
    with pytest.raises(ValueError, match="channel 99"):
        ChannelBaseline(trained, trained.features, 99).attribute(images)
    with pytest.raises(ValueError, match="one of each per image"):
        box_metrics([np.zeros((0, 5))], [], None)


def test_a_function_of_the_output_is_a_target_and_raw_maps_are_the_layers(trained):
    images, _, _ = planted(6, seed=8)
    layer = trained.features
    by_index = GradCam(trained, layer).attribute(images, 1)
    assert torch.equal(GradCam(trained, layer).attribute(images, lambda logits: logits[:, 1]), by_index)
    margin = GradCam(trained, layer).attribute(images, lambda logits: logits[:, 1] - logits[:, 0])
    assert margin.shape == by_index.shape and not torch.equal(margin, by_index)
    # normalize=False: Grad-CAM as written by hand, at the layer's resolution, not upsampled or scaled
    raw = Attribution(trained, layer, "gradcam").attribute(images, 1, normalize=False)
    activations = layer(images).detach().requires_grad_(True)
    logit = trained.head(activations.amax(dim=(2, 3)))[:, 1]
    gradients, = torch.autograd.grad(logit.sum(), activations)
    by_hand = torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)).detach()
    torch.testing.assert_close(raw, by_hand, atol=1e-6, rtol=1e-5)
    assert raw.max() > 1.0 or raw.max() < 0.99  # not min-max scaled
    weights = torch.full((len(images), 8), 1.0 / 8)
    mean_raw = Attribution(trained, layer, "mean_channels").attribute(images, normalize=False)
    torch.testing.assert_close(mean_raw, (layer(images).detach() * weights[..., None, None]).sum(dim=1))


def test_the_public_names_resolve_and_nothing_else_does():
    for name in mammo_interp.__all__:
        assert getattr(mammo_interp, name) is not None
    assert set(mammo_interp.__all__) <= set(dir(mammo_interp))
    with pytest.raises(AttributeError):
        mammo_interp.not_a_name  # noqa: B018
