"""Tests for mammo_interp.metrics: VOC matching and AP (hand cases, brute force, scikit-learn),
pointing games, and the image-level bootstrap of localization_metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from mammo_interp.metrics import (
    ImageLocalization,
    average_precision,
    best_iou_per_gt,
    energy_pointing_game,
    localization_metrics,
    match_detections,
    pointing_game,
)

GT_A = [0, 0, 10, 10]
GT_B = [50, 50, 60, 60]
FAR = [20, 20, 30, 30]


def _image(predictions, ground_truth, heatmap=None) -> ImageLocalization:
    return ImageLocalization(np.array(predictions, float), np.array(ground_truth, float), heatmap)


# ---------------------------------------------------------------- matching and AP, hand cases


def test_best_iou_per_gt():
    predictions = [[0, 0, 10, 5, 0.9], [0, 0, 10, 10, 0.1]]
    np.testing.assert_allclose(best_iou_per_gt(predictions, [GT_A, GT_B]), [1.0, 0.0])
    np.testing.assert_allclose(best_iou_per_gt(np.zeros((0, 5)), [GT_A]), [0.0])
    assert best_iou_per_gt(predictions, np.zeros((0, 4))).shape == (0,)


def test_match_detections_duplicate_is_false_positive_in_score_order():
    # The lower-scored detection overlaps the GT better, but the higher-scored one comes first.
    predictions = [[0, 0, 10, 10, 0.5], [0, 0, 10, 8, 0.9]]
    np.testing.assert_array_equal(match_detections(predictions, [GT_A], 0.5), [False, True])
    assert not match_detections(predictions, np.zeros((0, 4)), 0.5).any()
    assert match_detections(np.zeros((0, 5)), [GT_A], 0.5).shape == (0,)


def test_match_detections_voc_variant_does_not_fall_back_to_second_best_gt():
    gt = [[0, 0, 10, 10], [2, 0, 12, 10]]  # two overlapping GT boxes, IoU 8/12
    predictions = [[0, 0, 10, 10, 0.9], [1, 0, 11, 10, 0.8]]
    # The second detection's best GT (IoU 9/11 with either; first one wins) is taken: FP,
    # even though its IoU with the free second GT (9/11) passes the threshold.
    np.testing.assert_array_equal(match_detections(predictions, gt, 0.5), [True, False])
    np.testing.assert_array_equal(
        match_detections([[0, 0, 10, 10, 0.9], [2, 0, 12, 10, 0.8]], gt, 0.5), [True, True]
    )


def test_match_detections_threshold_is_inclusive():
    predictions = [[0, 0, 10, 5, 0.9]]  # IoU exactly 0.5
    assert match_detections(predictions, [GT_A], 0.5)[0]
    assert not match_detections(predictions, [GT_A], 0.51)[0]


def test_average_precision_hand_computed_tp_fp_tp():
    # Ranked TP (0.9), FP (0.8), TP (0.7) over 2 GT boxes: precision 1, 1/2, 2/3 at recall
    # 1/2, 1/2, 1; envelope 1, 2/3, 2/3; AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    images = [
        _image([GT_A + [0.9], FAR + [0.8]], [GT_A]),
        _image([GT_B + [0.7]], [GT_B]),
    ]
    assert average_precision(images, 0.5) == pytest.approx(5 / 6)


def test_average_precision_interpolates_precision_envelope():
    # TP, FP, FP, TP, TP over 3 GT: precision at the TPs 1, 2/4, 3/5; envelope 1, 3/5, 3/5.
    gts = [[10 * k, 0, 10 * k + 5, 5] for k in range(3)]
    flags = [True, False, False, True, True]
    predictions, gt_index = [], 0
    for rank, tp in enumerate(flags):
        box = gts[gt_index] if tp else [100 + 10 * rank, 100, 105 + 10 * rank, 105]
        gt_index += tp
        predictions.append(box + [1.0 - rank / 10])
    assert average_precision([_image(predictions, gts)], 0.5) == pytest.approx((1 + 0.6 + 0.6) / 3)


def test_average_precision_duplicates_negatives_and_edge_cases():
    perfect = [_image([GT_A + [0.3]], [GT_A]), _image([GT_B + [0.2]], [GT_B])]
    assert average_precision(perfect, 0.5) == 1.0
    # A duplicate on a detected GT is an FP, ranked after the TP here: AP unchanged.
    duplicate = [_image([GT_A + [0.9], GT_A + [0.8]], [GT_A])]
    assert average_precision(duplicate, 0.5) == 1.0
    # A higher-scored detection on an image without GT is an FP ahead of the TP: AP 1/2.
    negative = [_image([GT_A + [0.5]], [GT_A]), _image([GT_A + [0.95]], np.zeros((0, 4)))]
    assert average_precision(negative, 0.5) == pytest.approx(0.5)
    # A missed GT caps recall at 1/2.
    missed = [_image([GT_A + [0.5]], [GT_A, GT_B])]
    assert average_precision(missed, 0.5) == pytest.approx(0.5)
    assert average_precision([_image(np.zeros((0, 5)), [GT_A])], 0.5) == 0.0
    assert math.isnan(average_precision([_image([GT_A + [0.5]], np.zeros((0, 4)))], 0.5))
    assert math.isnan(average_precision([], 0.5))


# ---------------------------------------------------------------- AP against references


def _random_images(rng: np.random.Generator, n: int, miss: bool = True) -> list[ImageLocalization]:
    """Images with 0-3 GT boxes, jittered detections of them and spurious detections."""
    images = []
    for _ in range(n):
        corners = rng.uniform(0, 200, size=(rng.integers(0, 4), 2))
        gt = np.hstack([corners, corners + rng.uniform(10, 40, size=(len(corners), 2))])
        found = gt[rng.random(len(gt)) < 0.8] if miss else gt
        jittered = np.repeat(found, rng.integers(1, 3, size=len(found)), axis=0)
        jittered = jittered + rng.normal(0, 4, size=jittered.shape)
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        corners = rng.uniform(0, 200, size=(rng.integers(0, 3), 2))
        spurious = np.hstack([corners, corners + rng.uniform(5, 30, size=(len(corners), 2))])
        boxes = np.vstack([jittered, spurious])
        predictions = np.column_stack([boxes, rng.random(len(boxes))])
        images.append(ImageLocalization(predictions, gt))
    return images


def _brute_force_ap(images: list[ImageLocalization], threshold: float) -> float:
    """VOC devkit-style loop: scalar IoUs, per-image detected flags, mrec/mpre envelope."""

    def iou(p, g):
        w = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
        h = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - w * h
        return w * h / union if union > 0 else 0.0

    n_gt = sum(len(image.ground_truth) for image in images)
    if n_gt == 0:
        return math.nan
    pooled = [(p[4], i, p) for i, image in enumerate(images) for p in image.predictions]
    pooled.sort(key=lambda entry: -entry[0])
    detected = [[False] * len(image.ground_truth) for image in images]
    tp, fp = [], []
    for _, i, p in pooled:
        overlaps = [iou(p, g) for g in images[i].ground_truth]
        best = max(range(len(overlaps)), key=lambda j: overlaps[j]) if overlaps else None
        hit = best is not None and overlaps[best] >= threshold and not detected[i][best]
        if hit:
            detected[i][best] = True
        tp.append(int(hit))
        fp.append(int(not hit))
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    mrec = [0.0] + list(ctp / n_gt) + [1.0]
    mpre = [0.0] + list(ctp / np.maximum(ctp + cfp, 1)) + [0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    return sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.25, 0.5])
def test_average_precision_matches_brute_force(seed, threshold):
    images = _random_images(np.random.default_rng(seed), 25)
    assert average_precision(images, threshold) == pytest.approx(
        _brute_force_ap(images, threshold), abs=1e-12
    )


def _one_to_one_case(rng: np.random.Generator, n: int):
    """Images whose every GT is detected exactly (once); other detections hit nothing."""
    images = _random_images(rng, n, miss=False)
    flags, scores = [], []
    for k, image in enumerate(images):
        boxes = np.vstack([image.ground_truth, image.predictions[:, :4] + 1000])
        score = rng.random(len(boxes))
        images[k] = ImageLocalization(np.column_stack([boxes, score]), image.ground_truth)
        flags.append(np.arange(len(boxes)) < len(image.ground_truth))
        scores.append(score)
    return images, np.concatenate(flags), np.concatenate(scores)


def test_average_precision_matches_sklearn_curve_with_envelope():
    images, flags, scores = _one_to_one_case(np.random.default_rng(3), 30)
    assert 0 < average_precision(images, 0.5) < 1
    precision, recall, _ = precision_recall_curve(flags, scores)
    envelope = np.maximum.accumulate(precision)  # sklearn lists recall descending
    expected = np.sum(-np.diff(recall) * envelope[:-1])
    assert average_precision(images, 0.5) == pytest.approx(expected, abs=1e-12)


def test_average_precision_equals_sklearn_when_precision_at_hits_never_rises():
    # TPs at ranks 1, 3, 6, 10 (widening gaps): precision at the hits 1, 2/3, 1/2, 2/5 falls,
    # so the envelope changes nothing and VOC AP equals scikit-learn's step AP.
    flags = np.isin(np.arange(12), [0, 2, 5, 9])
    scores = np.sort(np.random.default_rng(4).random(12))[::-1]
    gts = [[20 * k, 0, 20 * k + 10, 10] for k in range(4)]
    boxes, next_gt = [], 0
    for rank, tp in enumerate(flags):
        boxes.append(gts[next_gt] if tp else [500 + 20 * rank, 500, 510 + 20 * rank, 510])
        next_gt += tp
    images = [ImageLocalization(np.column_stack([boxes, scores]), np.array(gts, float))]
    assert average_precision(images, 0.5) == pytest.approx(average_precision_score(flags, scores))
    # With a rising precision the two differ (interpolation): TP, FP, TP, TP.
    images = [ImageLocalization(np.column_stack([boxes[:2] + [gts[1], gts[2]], scores[:4]]),
                                np.array(gts[:3], float))]
    rising = [True, False, True, True]
    assert average_precision(images, 0.5) > average_precision_score(rising, scores[:4]) + 0.01


# ---------------------------------------------------------------- pointing games


def test_pointing_game_hand_cases():
    heatmap = np.zeros((10, 10))
    heatmap[4, 6] = 1.0  # pixel centre (6.5, 4.5)
    assert pointing_game(heatmap, [[5, 3, 8, 6]])
    assert not pointing_game(heatmap, [[0, 0, 6, 4]])  # max edges exclusive
    assert pointing_game(heatmap, [[0, 0, 6, 4]], tolerance=1)
    assert pointing_game(heatmap, [[0, 0, 1, 1], [6, 4, 7, 5]])  # any box
    heatmap[8, 1] = 1.0  # a tie later in raster order: the first argmax counts
    assert pointing_game(heatmap, [[6, 4, 7, 5]])
    assert not pointing_game(heatmap, [[1, 8, 2, 9]])
    with pytest.raises(ValueError, match="GT box"):
        pointing_game(heatmap, np.zeros((0, 4)))


def test_energy_pointing_game_hand_cases():
    heatmap = np.zeros((10, 10))
    heatmap[1, 1] = 1.0  # inside [0, 0, 3, 3]
    heatmap[2, 2] = -5.0  # negative: ignored
    heatmap[8, 8] = 3.0  # outside
    assert energy_pointing_game(heatmap, [[0, 0, 3, 3]]) == pytest.approx(0.25)
    assert energy_pointing_game(heatmap, [[0, 0, 3, 3], [7, 7, 10, 10]]) == pytest.approx(1.0)
    assert energy_pointing_game(heatmap, [[0, 0, 3, 3], [0, 0, 2, 2]]) == pytest.approx(0.25)
    assert math.isnan(energy_pointing_game(-np.ones((4, 4)), [[0, 0, 2, 2]]))
    with pytest.raises(ValueError, match="finite"):
        energy_pointing_game(np.full((4, 4), np.nan), [[0, 0, 2, 2]])


# ---------------------------------------------------------------- localization_metrics


def _with_heatmaps(images: list[ImageLocalization], rng: np.random.Generator):
    out = []
    for image in images:
        heatmap = rng.random((64, 64)) - 0.2
        for x0, y0, x1, y1 in (image.ground_truth / 4).astype(int)[:1]:
            heatmap[y0:y1 + 1, x0:x1 + 1] += rng.uniform(0, 1.5)
        out.append(ImageLocalization(image.predictions, image.ground_truth, heatmap))
    return out


def test_localization_metrics_point_values_and_keys():
    rng = np.random.default_rng(5)
    images = _random_images(rng, 20)
    result = localization_metrics(images, n_boot=50)
    assert set(result) == {"iou_hit@0.25", "iou_hit@0.5", "mean_iou", "ap@0.25", "ap@0.5"}
    best = np.concatenate([best_iou_per_gt(i.predictions, i.ground_truth) for i in images])
    assert result["mean_iou"].value == pytest.approx(best.mean())
    assert result["iou_hit@0.5"].value == pytest.approx((best >= 0.5).mean())
    assert result["ap@0.25"].value == pytest.approx(average_precision(images, 0.25))

    images = _with_heatmaps(images, rng)
    result = localization_metrics(images, n_boot=50)
    with_gt = [i for i in images if len(i.ground_truth)]
    assert result["pointing_game"].value == pytest.approx(
        np.mean([pointing_game(i.heatmap, i.ground_truth) for i in with_gt])
    )
    assert result["energy_pg"].value == pytest.approx(
        np.mean([energy_pointing_game(i.heatmap, i.ground_truth) for i in with_gt])
    )
    for estimate in result.values():
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.n_boot == 50
    with pytest.raises(ValueError, match="heatmap"):
        localization_metrics(images[:3] + [ImageLocalization(np.zeros((0, 5)), [GT_A])])


def test_localization_metrics_bootstrap_matches_slow_resampling():
    rng = np.random.default_rng(6)
    images = _with_heatmaps(_random_images(rng, 12), rng)
    n_boot, seed = 40, 9
    result = localization_metrics(images, n_boot=n_boot, seed=seed)
    # The same draws as models.metrics.bootstrap_statistics (one chunk), evaluated image list by list.
    draws = np.random.default_rng(seed).integers(0, len(images), size=(n_boot, len(images)))
    slow = {name: [] for name in result}
    for row in draws:
        sample = [images[i] for i in row]
        with_gt = [i for i in sample if len(i.ground_truth)]
        if not with_gt:
            continue
        best = np.concatenate([best_iou_per_gt(i.predictions, i.ground_truth) for i in with_gt])
        slow["iou_hit@0.25"].append((best >= 0.25).mean())
        slow["iou_hit@0.5"].append((best >= 0.5).mean())
        slow["mean_iou"].append(best.mean())
        slow["ap@0.25"].append(average_precision(sample, 0.25))
        slow["ap@0.5"].append(average_precision(sample, 0.5))
        for name, game in (("pointing_game", pointing_game), ("energy_pg", energy_pointing_game)):
            slow[name].append(np.mean([game(i.heatmap, i.ground_truth) for i in with_gt]))
    for name, values in slow.items():
        low, high = np.percentile(values, [2.5, 97.5])
        assert (result[name].low, result[name].high) == pytest.approx((low, high), abs=1e-12), name
        assert result[name].n_boot == len(values)


def test_localization_metrics_deterministic_and_skips_resamples_without_gt():
    images = [_image([GT_A + [0.9]], [GT_A]), _image([FAR + [0.4]], np.zeros((0, 4)))]
    first = localization_metrics(images, n_boot=200, seed=3)
    assert first == localization_metrics(images, n_boot=200, seed=3)
    assert first != localization_metrics(images, n_boot=200, seed=4)
    draws = np.random.default_rng(3).integers(0, 2, size=(200, 2))
    defined = int((draws == 0).any(axis=1).sum())
    assert 100 < defined < 200
    assert first["iou_hit@0.5"].n_boot == first["ap@0.5"].n_boot == defined
    hits = first["iou_hit@0.5"]
    assert (hits.value, hits.low, hits.high) == (1.0, 1.0, 1.0)
    assert first["ap@0.5"].value == pytest.approx(1.0)  # the FP ranks below the TP
    with pytest.raises(ValueError):
        localization_metrics([])


def test_localization_metrics_energy_pg_leaves_out_unscored_heatmaps():
    inside = np.zeros((20, 20))
    inside[2, 2] = 1.0
    images = [
        _image([GT_A + [0.9]], [GT_A], inside),
        _image([GT_B + [0.9]], [GT_B], np.zeros((20, 20))),  # no positive value: left out
    ]
    result = localization_metrics(images, n_boot=20)
    assert result["energy_pg"].value == 1.0
    assert result["pointing_game"].value == 0.5  # the flat map's first argmax (0, 0) misses


def test_localization_metrics_is_fast():
    import time

    images = _random_images(np.random.default_rng(7), 200)
    start = time.perf_counter()
    localization_metrics(images, n_boot=1000)
    assert time.perf_counter() - start < 3.0
