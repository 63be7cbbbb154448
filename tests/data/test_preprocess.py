"""Preprocessing: the breast crop, and boxes that move exactly with the pixels."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.data.preprocess import (
    GeometricTransform,
    PreprocessConfig,
    breast_bbox,
    otsu_threshold,
    preprocess_image,
)


def _recover_box(image, threshold):
    rows, cols = np.nonzero(image > threshold)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=float)


@st.composite
def scenes(draw):
    """A phantom with a lesion box well inside the breast, and a preprocessing config."""
    height = draw(st.integers(64, 256))
    width = draw(st.integers(max(40, height // 3), height))
    laterality = draw(st.sampled_from(["L", "R"]))
    out_h = draw(st.integers(32, 160))
    out_w = draw(st.integers(24, 120))
    # the lesion must span >= 3 output pixels, whatever the scale (the crop only zooms in)
    scale = min(out_h / height, out_w / width)
    min_side = int(np.ceil(3 / scale))
    bw = draw(st.integers(min_side, max(min_side, int(0.2 * width))))
    bh = draw(st.integers(min_side, max(min_side, int(0.2 * height))))
    depth = draw(st.integers(int(0.08 * width), int(0.3 * width)))  # from the chest wall
    y0 = draw(st.integers(int(0.35 * height), int(0.65 * height) - bh // 2))
    x0 = depth if laterality == "L" else width - depth - bw
    config = PreprocessConfig(
        size=(out_h, out_w),
        flip_right=draw(st.booleans()),
        margin=draw(st.sampled_from([0.0, 0.01, 0.05])),
        crop=draw(st.booleans()),
    )
    return height, width, laterality, (x0, y0, x0 + bw, y0 + bh), config


@settings(max_examples=60, deadline=None)
@given(scenes())
def test_box_drawn_in_pixels_lands_where_transform_says(helpers, scene):
    height, width, laterality, box, config = scene
    # with cropping, a burned-in label (0.95) must be cropped away or it would spoil the recovery
    pixels = helpers.phantom(height, width, laterality, boxes=[box], label=config.crop)
    image, transform, boxes_out = preprocess_image(pixels, config, boxes=[box], laterality=laterality)
    assert image.shape == config.size and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    expected = transform.apply_boxes(box)
    # tissue is ~0.45, the lesion 1.0: half way between recovers its edges after resampling
    recovered = _recover_box(image, 0.75)
    np.testing.assert_allclose(recovered, expected, atol=1.0)
    np.testing.assert_allclose(boxes_out[0], expected)  # inside the content: clipping is a no-op
    np.testing.assert_allclose(transform.invert_boxes(expected), box, atol=1e-9)


@st.composite
def transforms_and_boxes(draw):
    h0, w0 = draw(st.integers(8, 5000)), draw(st.integers(8, 5000))
    x0, y0 = draw(st.integers(0, w0 - 4)), draw(st.integers(0, h0 - 4))
    x1, y1 = draw(st.integers(x0 + 1, w0)), draw(st.integers(y0 + 1, h0))
    rh, rw = draw(st.integers(1, 2000)), draw(st.integers(1, 2000))
    transform = GeometricTransform(
        original_shape=(h0, w0), flipped=draw(st.booleans()), crop=(x0, y0, x1, y1),
        resized_shape=(rh, rw), pad=(draw(st.integers(0, 50)), draw(st.integers(0, 50))),
        output_shape=(rh + 50, rw + 50),
    )
    coords = st.floats(-100, 6000, allow_nan=False)
    boxes = draw(st.lists(st.tuples(coords, coords, coords, coords), min_size=1, max_size=5))
    return transform, np.array([(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in boxes])


@settings(max_examples=200, deadline=None)
@given(transforms_and_boxes())
def test_apply_then_invert_is_identity(case):
    transform, boxes = case
    forward = transform.apply_boxes(boxes)
    assert (forward[:, 0] <= forward[:, 2]).all() and (forward[:, 1] <= forward[:, 3]).all()
    np.testing.assert_allclose(transform.invert_boxes(forward), boxes, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(transform.apply_boxes(transform.invert_boxes(boxes)), boxes, rtol=1e-9, atol=1e-6)


def test_transform_hand_computed_and_serializable():
    transform = GeometricTransform(
        original_shape=(100, 80), flipped=True, crop=(10, 20, 50, 100), resized_shape=(40, 20),
        pad=(5, 0), output_shape=(40, 32),
    )
    assert transform.scale == (0.5, 0.5)
    # flip: x -> 80 - x, so (60, 30, 70, 40) -> (10, 30, 20, 40); then crop, scale 0.5, pad 5
    np.testing.assert_allclose(transform.apply_boxes([60, 30, 70, 40]), [5, 5, 10, 10])
    assert transform.content_box == (5, 0, 25, 40)
    clone = GeometricTransform.from_dict(json.loads(json.dumps(transform.to_dict())))
    assert clone == transform
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        transform.apply_boxes([1, 2, 3])


def test_crop_excludes_burned_in_label_and_border(helpers):
    pixels = helpers.phantom(200, 160, "L", label=True)
    pixels[:, -3:] = 0.9  # a bright film edge, removed by the border trim
    config = PreprocessConfig(size=(100, 80), margin=0.0, border_trim=0.02)
    image, transform, _ = preprocess_image(pixels, config, laterality="L")
    x0, y0, x1, y1 = transform.crop
    # breast: x in [0, 0.6 W) = [0, 96), y in [0.12 H, 0.88 H) = [24, 176); label at x >= 124
    assert x0 <= 4 and 94 <= x1 <= 100 and 20 <= y0 <= 28 and 172 <= y1 <= 180
    assert (image[:, : transform.resized_shape[1]] > 0.2).mean() > 0.6  # mostly breast


def test_padding_goes_to_the_anterior_side(helpers):
    # a wide, short crop fills the width; a tall, narrow crop leaves room at the side
    config = PreprocessConfig(size=(100, 100), margin=0.0)
    left = helpers.phantom(200, 100, "L")
    _, transform, _ = preprocess_image(left, config, laterality="L")
    assert transform.pad == (0, 0) and transform.resized_shape[1] < 100
    image, transform, _ = preprocess_image(left[:, ::-1], config, laterality="R")
    assert transform.pad[0] == 100 - transform.resized_shape[1] > 0
    assert image[:, -1].max() > 0.3 and image[:, 0].max() == 0  # chest wall on the right
    image, transform, _ = preprocess_image(left[:, ::-1], PreprocessConfig((100, 100), margin=0.0, flip_right=True), laterality="R")
    assert transform.flipped and transform.pad == (0, 0) and image[:, 0].max() > 0.3


def test_flip_right_needs_laterality(helpers):
    with pytest.raises(ValueError, match="laterality"):
        preprocess_image(helpers.phantom(64, 48), PreprocessConfig(flip_right=True))


def test_blank_image_is_resized_whole():
    image, transform, _ = preprocess_image(np.zeros((60, 40), np.float32), PreprocessConfig(size=(30, 20)))
    assert transform.crop == (0, 0, 40, 60) and image.shape == (30, 20) and image.max() == 0


def test_no_crop_keeps_the_whole_image(helpers):
    _, transform, _ = preprocess_image(helpers.phantom(64, 48), PreprocessConfig(size=(32, 24), crop=False))
    assert transform.crop == (0, 0, 48, 64) and transform.resized_shape == (32, 24)


def test_otsu_splits_two_populations():
    values = np.concatenate([np.full(1000, 0.1), np.full(500, 0.7)])
    assert 0.1 < otsu_threshold(values) <= 0.7


def test_breast_bbox_picks_largest_component(helpers):
    pixels = np.zeros((100, 100), np.float32)
    pixels[10:15, 80:95] = 1.0  # small bright label
    pixels[30:90, 0:50] = 0.5  # big breast
    assert breast_bbox(pixels, PreprocessConfig()) == (0, 30, 50, 90)


@pytest.mark.parametrize(
    "kwargs", [{"size": (0, 10)}, {"border_trim": 0.5}, {"margin": -0.1}, {"threshold": 1.5}, {"otsu_fraction": 0}]
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


def test_config_dict_round_trip():
    config = PreprocessConfig(size=(64, 40), threshold=0.1, flip_right=True)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_public_names_are_unambiguous():
    import models.data
    import models.data.preprocess as module

    assert models.data.preprocess is module  # the package attribute stays the module
    assert models.data.preprocess_image is module.preprocess_image
