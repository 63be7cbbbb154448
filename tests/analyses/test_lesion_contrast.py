"""The lesion contrast-to-noise measurement: the filtered map equals a direct pixel-by-pixel
computation, a planted blob stands out by its known contrast, and the CLI writes its tables."""

import numpy as np
import pandas as pd
import pytest

from analyses.lesion_contrast import BREAST_LEVEL, CORE, RING, contrast_to_noise_map, main


def _direct(image: np.ndarray, cx: int, cy: int, radius: float) -> float:
    """The same statistic by selecting pixels (an independent implementation)."""
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    distance = np.hypot(xx - cx, yy - cy)
    core = image[distance < max(CORE * radius, 1.0)]
    ring = image[(distance > RING[0] * radius) & (distance < RING[1] * radius) & (image > BREAST_LEVEL)]
    return (core.mean() - ring.mean()) / (ring.std() + 1e-6)


def test_map_matches_direct_computation_away_from_the_border():
    rng = np.random.default_rng(0)
    image = np.clip(0.5 + 0.1 * rng.standard_normal((64, 48)), 0, 1)
    image[:, :6] = 0  # background inside some rings
    cnr = contrast_to_noise_map(image, 5.0)
    for cy, cx in [(20, 20), (32, 10), (40, 30), (12, 40)]:
        assert cnr[cy, cx] == pytest.approx(_direct(image, cx, cy, 5.0), rel=1e-6, abs=1e-6)


def test_planted_disc_stands_out_by_its_contrast():
    rng = np.random.default_rng(1)
    image = 0.5 + 0.05 * rng.standard_normal((80, 80))
    yy, xx = np.mgrid[0:80, 0:80]
    image[np.hypot(xx - 40, yy - 40) < 6] += 0.2  # 4 noise SDs
    cnr = contrast_to_noise_map(image, 6.0)
    assert cnr[40, 40] == pytest.approx(4.0, abs=0.5)
    assert np.nanargmax(cnr) in {np.ravel_multi_index((y, x), cnr.shape) for y in range(37, 44) for x in range(37, 44)}
    assert np.isnan(contrast_to_noise_map(np.zeros((30, 30)), 4.0)).all()  # no breast, no ring


def test_cli_measures_boxes_and_finding_free_images(tiny_masses, tmp_path):
    frame = main(["--data", str(tiny_masses), "--report-dir", str(tmp_path), "--no-progress",
                  "--image-size", "128", "80", "--null-radius", "5"])
    assert frame["what"].iloc[:2].tolist() == ["finding-free image, random point", "finding-free image, image maximum"]
    assert (frame["n"] > 0).all() and "Mass" in set(frame["what"])
    written = pd.read_csv(tmp_path / "lesion_contrast.csv")
    assert list(written["what"]) == list(frame["what"])
    for suffix in ("md", "tex"):
        assert (tmp_path / f"lesion_contrast.{suffix}").is_file()
