"""Deletion/insertion curves: pixel order, the perturbed images, and the AUCs cross-checked against
a plain numpy implementation on a planted lesion score, where a map on the lesion must win."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_interp import faithfulness as ft


def _lesion_case():
    image = torch.full((1, 1, 20, 16), 0.3)
    image[0, 0, 6:10, 5:9] = 1.0
    mask = torch.zeros(1, 20, 16, dtype=torch.bool)
    mask[0, 2:18, 1:15] = True
    lesion = torch.zeros(1, 20, 16)
    lesion[0, 6:10, 5:9] = 1.0
    return image, mask, lesion


def _score(batch: torch.Tensor) -> torch.Tensor:
    return batch[:, 0, 6:10, 5:9].mean(dim=(1, 2))  # the model "sees" the lesion only


def test_pixels_are_ranked_inside_the_breast_hottest_first_ties_in_reading_order():
    heat = torch.tensor([[0.5, 0.9], [0.5, 0.1]])
    mask = torch.tensor([[True, True], [True, False]])
    assert ft.ranked_pixels(heat, mask).tolist() == [1, 0, 2]


def test_the_ends_of_the_curves_are_the_image_and_the_baseline():
    image, mask, lesion = _lesion_case()
    base = ft.blurred(image[0])
    deletion, insertion = ft.perturbed(image[0], base, ft.ranked_pixels(lesion[0], mask[0]), np.array([0.0, 1.0]))
    inside = mask[0]
    assert torch.equal(deletion[0], image[0]) and torch.equal(insertion[1][0][inside], image[0, 0][inside])
    assert torch.equal(deletion[1][0][inside], base[0][inside]) and torch.equal(deletion[1][0][~inside], image[0, 0][~inside])
    assert torch.equal(insertion[0][0][inside], base[0][inside])


def _by_numpy(image, heat, mask, fractions, sigma):
    from scipy.ndimage import gaussian_filter

    img, base = image[0, 0].numpy().astype(float), gaussian_filter(image[0, 0].numpy().astype(float), sigma)
    inside = np.flatnonzero(mask[0].numpy().ravel())
    order = inside[np.argsort(-heat[0].numpy().ravel()[inside], kind="stable")]
    down, up = [], []
    for f in fractions:
        moved = order[:int(round(f * len(order)))]
        d, u = img.ravel().copy(), base.ravel().copy()
        d[moved], u[moved] = base.ravel()[moved], img.ravel()[moved]
        down.append(d.reshape(img.shape)[6:10, 5:9].mean())
        up.append(u.reshape(img.shape)[6:10, 5:9].mean())
    area = lambda y: sum((y[i] + y[i + 1]) / 2 * (fractions[i + 1] - fractions[i]) for i in range(len(y) - 1))
    return area(down), area(up)


def test_aucs_match_numpy_and_a_map_on_the_lesion_beats_an_inverted_one():
    image, mask, lesion = _lesion_case()
    perfect = ft.perturbation_curves(_score, image, lesion, mask)
    deletion, insertion = _by_numpy(image, lesion, mask, ft.FRACTIONS, ft.BLUR_SIGMA)
    assert perfect.loc[0, "deletion_auc"] == pytest.approx(deletion, abs=1e-5)
    assert perfect.loc[0, "insertion_auc"] == pytest.approx(insertion, abs=1e-5)
    inverted = ft.perturbation_curves(_score, image, 1 - lesion, mask)
    assert perfect.loc[0, "difference"] > 0 > inverted.loc[0, "difference"]
    assert len(perfect.loc[0, "deletion_curve"]) == len(ft.FRACTIONS)
