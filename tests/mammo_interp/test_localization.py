"""Heatmaps -> boxes -> metrics through the shared rule: a perfect heatmap must localize perfectly."""

from __future__ import annotations

import numpy as np
import torch

from mammo_interp import localization
from mammo_interp.boxes import boxes_mask
from mammo_interp.features import FeatureSet
from mammo_interp.boxes import BoxRule
from mammo_interp.localization import evaluate_methods, predictions_frame
from mammo_interp.metrics import ImageLocalization
from models.data.preprocess import GeometricTransform


def _features() -> FeatureSet:
    """Four 64 x 48 images: two with a mass box (category 0), one with another finding, one clean."""
    boxes = [np.array([[10, 12, 20, 22]], np.float32), np.array([[30, 40, 42, 50]], np.float32),
             np.array([[5, 5, 15, 15]], np.float32), np.zeros((0, 4), np.float32)]
    labels = [np.array([0]), np.array([0]), np.array([1]), np.zeros(0, np.int64)]
    masks = torch.zeros(4, 64, 48, dtype=torch.bool)
    masks[:, 2:62, 0:46] = True
    transform = GeometricTransform(original_shape=(128, 96), flipped=False, crop=(0, 0, 96, 128),
                                   resized_shape=(64, 48), pad=(0, 0), output_shape=(64, 48)).to_dict()
    return FeatureSet(torch.zeros(4, 2, 4, 3), ["a", "b", "c", "d"], boxes, labels, masks, [transform] * 4, "head")


def test_a_heatmap_equal_to_the_boxes_hits_every_box_and_a_flat_one_none():
    features = _features()
    truth = features.category_boxes(0)
    perfect = torch.stack([torch.from_numpy(boxes_mask(t, (64, 48)).astype(np.float32)) for t in truth])
    wrong = torch.roll(perfect, shifts=25, dims=1)
    results, localized = evaluate_methods({"perfect": perfect, "shifted": wrong}, features, 0,
                                          BoxRule(quantile=0.5, min_area=4), n_boot=20)
    assert results["perfect"]["IoU-hit@0.5"].value == 1.0
    assert results["perfect"]["AP@0.5"].value == 1.0
    assert results["perfect"]["pointing game"].value == 1.0
    assert results["shifted"]["IoU-hit@0.25"].value == 0.0
    assert np.allclose(localized["perfect"][0].predictions[0, :4], [10, 12, 20, 22])
    frame = predictions_frame(localized["perfect"], features, "perfect")
    assert list(frame["image_id"]) == ["a", "b"]
    # Original pixels are twice the preprocessed ones here.
    assert np.allclose(frame.loc[0, ["orig_xmin", "orig_ymin", "orig_xmax", "orig_ymax"]].astype(float), [20, 24, 40, 44])


def test_overlay_figure_keeps_its_title_clear_of_the_column_titles(monkeypatch):
    figures = []
    monkeypatch.setattr(localization, "save_figure", lambda fig, path: figures.append(fig) or [])
    item = ImageLocalization(np.array([[10, 10, 40, 40, 1.0]]), np.array([[12, 12, 42, 42]]), np.ones((64, 40)))
    methods = ["FActOR top-k", "Integrated Gradients", "supervised reference (Grad-CAM)"]
    localization.overlay_figure([np.zeros((64, 40))], {m: [item] for m in methods}, [0], ["case"], "unused", "Mass")
    fig = figures[0]
    fig.canvas.draw()  # layout happens at draw time, as when the figure is saved
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not title.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()
        assert not title.overlaps(ax.get_window_extent(renderer))
