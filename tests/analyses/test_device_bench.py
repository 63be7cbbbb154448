"""The scale benchmark runs on the CPU and reports sane numbers (the real run is not a test)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyses import device_bench


def test_unknown_cases_are_refused():
    with pytest.raises(ValueError, match="unknown cases"):
        device_bench.DeviceBenchConfig(encoders=("b7",))
    with pytest.raises(ValueError, match="unknown cases"):
        device_bench.DeviceBenchConfig(precisions=("fp8",))


@pytest.mark.slow
def test_lite0_rows_for_both_precisions_on_the_cpu(tmp_path):
    device_bench.main(["--encoders", "lite0", "--steps", "1", "--batch-size", "2", "--device", "cpu",
                       "--report-dir", str(tmp_path)])
    for suffix in (".md", ".csv", ".tex", ".json"):
        assert (tmp_path / f"cpu{suffix}").is_file(), suffix
    rows = pd.DataFrame(json.loads((tmp_path / "cpu.json").read_text())["rows"])
    assert list(rows["precision"]) == ["fp32", "bf16"] and set(rows["device"]) == {"cpu"}
    assert (rows["batch"] == 2).all()
    for column in ("pretrain_images_per_s", "embed_images_per_s", "factor_boxes_over_forward", "peak_rss_mb"):
        assert (rows[column] > 0).all(), column
