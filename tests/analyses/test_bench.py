"""The benchmark cases run and report sane numbers on tiny inputs (the real run is not a test)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from analyses import bench


@pytest.mark.slow
def test_cases_report_positive_rates_and_ratios():
    factor = bench.bench_factor(64, 2, repeats=1)
    assert factor["ratio"] > 0 and factor["bare_images_per_s"] > 0
    tsne = bench.bench_tsne(120)
    assert tsne["opentsne_s"] > 0 and tsne["sklearn_over_opentsne"] > 0
    embeddings = bench.bench_embeddings(64, 2)
    assert embeddings["image_embeddings_per_s"] > 0 and embeddings["text_embeddings_per_s"] > 0


@pytest.mark.slow
def test_shapley_reuses_encoded_views_so_it_is_cheaper_than_re_encoding_every_subset():
    result = bench.bench_shapley(64, 1, repeats=2)
    # 15 subsets re-encoded = 32 view forwards; cached features = 4 views + 1 blank view
    assert 0 < result["shapley_over_forward"] < result["naive_shapley_over_forward"]


def test_synthetic_case_reports_generation_and_cache_rates():
    result = bench.bench_synthetic(1)
    assert result["images"] == 4 and result["studies_per_s"] > 0
    assert result["warm_cache_images_per_s"] > 0 and result["warm_cache_speedup"] > 0


def _pid() -> dict:
    return {"pid": os.getpid()}


def test_isolated_runs_in_another_process_and_reports_its_memory():
    result = bench.isolated(_pid)
    assert result["pid"] != os.getpid() and result["peak_rss_mb"] > 0


@pytest.mark.slow
def test_main_writes_every_case_to_md_csv_tex_and_json(tmp_path):
    stem = tmp_path / "bench"
    bench.main(["--report-dir", str(tmp_path), "--heights", "64", "--images", "2", "--studies", "1",
                "--exams", "1", "--tsne-points", "60", "--repeats", "1"])
    for suffix in (".md", ".csv", ".tex", ".json"):
        assert stem.with_suffix(suffix).is_file(), suffix
    cases = pd.read_csv(stem.with_suffix(".csv"))["case"].unique()
    assert len(cases) == 5 and any("Shapley" in case for case in cases)
    record = json.loads(stem.with_suffix(".json").read_text())
    assert "CPUs" in record["machine"] and all(row["value"] > 0 for row in record["rows"])
