"""Tests for mammo_interp.boxes: IoU against torchvision, heatmap boxes on drawn blobs, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from mammo_interp.boxes import as_boxes, box_iou, boxes_mask, heatmap_to_boxes


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    corner = rng.uniform(0, 50, size=(n, 2))
    return np.hstack([corner, corner + rng.uniform(0, 30, size=(n, 2))])


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
    b[:5] = a[:5]  # identical pairs: IoU 1
    expected = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12, atol=1e-12)
    assert (box_iou(a, b) > 0).mean() > 0.1  # the check is not all zeros
    np.testing.assert_allclose(np.diag(box_iou(a[:5], b[:5])), 1.0)


def test_box_iou_hand_case_and_degenerate_inputs():
    assert box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0, 0] == pytest.approx(2 / 6)
    assert box_iou([[0, 0, 1, 1]], [[1, 1, 2, 2]])[0, 0] == 0.0  # touching edges
    assert box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0  # zero-area union
    assert box_iou(np.zeros((0, 4)), _random_boxes(np.random.default_rng(1), 3)).shape == (0, 3)
    assert box_iou([[0, 0, 1, 1]] * 2, []).shape == (2, 0)
    with pytest.raises(ValueError, match="xmax >= xmin"):
        box_iou([[2, 0, 1, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="shape"):
        as_boxes(np.zeros((2, 3)))


def _two_rectangles() -> np.ndarray:
    image = np.zeros((100, 120))
    image[10:20, 30:45] = 2.0  # rows 10..19, columns 30..44: box (30, 10, 45, 20)
    image[60:80, 70:75] = 1.0  # box (70, 60, 75, 80)
    return image


def test_heatmap_to_boxes_finds_drawn_rectangles_in_score_order():
    boxes = heatmap_to_boxes(_two_rectangles(), quantile=0.9, min_area=1)
    np.testing.assert_array_equal(boxes, [[30, 10, 45, 20, 2.0], [70, 60, 75, 80, 1.0]])


def test_heatmap_to_boxes_gaussian_blobs():
    yy, xx = np.mgrid[0:128, 0:128]
    blob = lambda x, y, s: np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))  # noqa: E731
    heatmap = 0.6 * blob(30, 90, 4) + 1.0 * blob(100, 20, 4)
    boxes = heatmap_to_boxes(heatmap, quantile=0.95)
    assert boxes.shape == (2, 5)
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    np.testing.assert_allclose(centres, [[100.5, 20.5], [30.5, 90.5]], atol=1.0)
    assert boxes[0, 4] > boxes[1, 4]
    # The blob's box must hold the in-region pixels: everything above the 95 % quantile.
    above = heatmap > np.quantile(heatmap, 0.95)
    assert not (above & ~boxes_mask(boxes[:, :4], heatmap.shape)).any()


def test_heatmap_to_boxes_regions_are_eight_connected():
    image = np.zeros((40, 40))
    for k in range(6):  # a diagonal line: one 8-connected region, six 4-connected ones
        image[10 + k, 10 + k] = 1.0
    boxes = heatmap_to_boxes(image, quantile=0.5, min_area=1)
    np.testing.assert_array_equal(boxes, [[10, 10, 16, 16, 1.0]])


def test_heatmap_to_boxes_min_area_mask_and_max_boxes():
    image = _two_rectangles()
    image[90:93, 5:8] = 3.0  # a 9-pixel blob with the top score
    assert len(heatmap_to_boxes(image, quantile=0.9, min_area=1)) == 3
    assert len(heatmap_to_boxes(image, quantile=0.9, min_area=9)) == 3  # exactly min_area: kept
    kept = heatmap_to_boxes(image, quantile=0.9, min_area=10)
    np.testing.assert_array_equal(kept[:, :4], [[30, 10, 45, 20], [70, 60, 75, 80]])

    mask = np.ones(image.shape, dtype=bool)
    mask[:50] = False  # hides the top rectangle
    masked = heatmap_to_boxes(image, quantile=0.5, min_area=1, mask=mask)
    np.testing.assert_array_equal(masked[:, :4], [[5, 90, 8, 93], [70, 60, 75, 80]])

    capped = heatmap_to_boxes(image, quantile=0.9, min_area=1, max_boxes=1)
    np.testing.assert_array_equal(capped, [[5, 90, 8, 93, 3.0]])


def test_heatmap_to_boxes_pixels_outside_mask_never_join_a_region():
    image = np.zeros((30, 30))
    image[10:20, 5:25] = 1.0
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, :15] = True
    boxes = heatmap_to_boxes(image, quantile=0.5, min_area=1, mask=mask)
    np.testing.assert_array_equal(boxes, [[5, 10, 15, 20, 1.0]])


def test_heatmap_to_boxes_constant_heatmap_gives_no_box():
    assert heatmap_to_boxes(np.full((20, 20), 0.3), min_area=1).shape == (0, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantile": 0.0}, "quantile"),
        ({"quantile": 1.0}, "quantile"),
        ({"mask": np.ones((5, 5), dtype=bool)}, "mask shape"),
        ({"mask": np.zeros((10, 10), dtype=bool)}, "no pixels"),
        ({"max_boxes": 0}, "max_boxes"),
    ],
)
def test_heatmap_to_boxes_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        heatmap_to_boxes(np.zeros((10, 10)), **kwargs)


def test_heatmap_to_boxes_rejects_nan_and_non_2d():
    heatmap = np.zeros((10, 10))
    heatmap[3, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        heatmap_to_boxes(heatmap)
    with pytest.raises(ValueError, match="2-D"):
        heatmap_to_boxes(np.zeros((2, 10, 10)))


def test_boxes_mask_pixel_centre_rule():
    # Integer box: columns 3..5, rows 1..2.
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 3:6] = True
    np.testing.assert_array_equal(boxes_mask([[3, 1, 6, 3]], (6, 8)), expected)
    # Fractional edges: column c is in iff xmin <= c + 0.5 < xmax.
    row = boxes_mask([[2.5, 0, 5.5, 1], [2.6, 1, 5.6, 2]], (2, 8)).astype(int)
    np.testing.assert_array_equal(row, [[0, 0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]])
    # Union, clipping at the image border, empty boxes.
    union = boxes_mask([[-5, -5, 2, 2], [1, 1, 3, 3], [4, 4, 4, 9]], (4, 4))
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = expected[1:3, 1:3] = True
    np.testing.assert_array_equal(union, expected)
    assert not boxes_mask(np.zeros((0, 4)), (3, 3)).any()


def test_boxes_mask_matches_per_pixel_centre_check():
    rng = np.random.default_rng(2)
    boxes = rng.uniform(-3, 20, size=(6, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 8, size=(6, 2))
    rows, cols = np.mgrid[0:17, 0:19] + 0.5
    inside = (
        (boxes[:, 0, None, None] <= cols)
        & (cols < boxes[:, 2, None, None])
        & (boxes[:, 1, None, None] <= rows)
        & (rows < boxes[:, 3, None, None])
    ).any(axis=0)
    np.testing.assert_array_equal(boxes_mask(boxes, (17, 19)), inside)
