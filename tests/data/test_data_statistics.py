"""The real-vs-synthetic statistics table: each figure measured on a hand-made VinDr tree."""

from __future__ import annotations

import numpy as np

from analyses.data_statistics import VINDR, main, measure
from models.data import schema


def test_statistics_of_a_known_tree(vindr_root, helpers):
    path = vindr_root / schema.FINDING_CSV
    rows = helpers.read_csv(path)
    mlo = next(r for r in rows if r["image_id"] == "s1-L-MLO")
    mlo["xmax"] = "67.0"  # 3 px past the 64-px-wide image
    helpers.write_csv(path, tuple(rows[0]), rows)
    stats = measure(vindr_root)
    assert set(stats) == set(VINDR)
    # 7 images in 2 studies; masses on s1-L-CC and s1-L-MLO, calcifications on s1-L-CC
    assert stats["Mass (% images)"] == "28.6" and stats["Suspicious Calcification (% images)"] == "14.3"
    assert stats["any box (% images)"] == "28.6" and stats["any box (% studies)"] == "50.0"
    assert stats["boxes per image with a box (mean / max)"] == "1.50 / 2"
    assert stats["density A / B / C / D (% images)"] == "0.0 / 0.0 / 100.0 / 0.0"
    assert stats["rows naming several categories"] == "1"
    assert stats["boxes past the image edge by > 1 px"] == "1 (33.33 %)"
    lcc = np.sqrt(12 * 12) / 96
    mlo_size = np.sqrt((67 - 12) * (44 - 30)) / 96
    expected = np.percentile([lcc, mlo_size], (10, 50, 90))
    assert stats["Mass size p10 / p50 / p90"] == " / ".join(f"{q:.3f}".lstrip("0") for q in expected)


def test_main_writes_the_table_in_three_formats(vindr_root, tmp_path):
    table = main(["--data", str(vindr_root), "--report-dir", str(tmp_path)])
    assert list(table.columns) == ["statistic", "VinDr-Mammo v1.0", vindr_root.name]
    for suffix in ("md", "csv", "tex"):
        assert (tmp_path / f"vindr_vs_data.{suffix}").is_file()
