"""The scale benchmark runs on the CPU and reports sane numbers (the real run is not a test)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

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
    assert rows.loc[0, "embedding_max_abs_diff_vs_cpu"] == 0 and rows.loc[1, "embedding_max_abs_diff_vs_cpu"] > 0


def test_agreement_is_exactly_zero_at_float32_on_the_cpu_and_not_under_bfloat16():
    from mammo_interp.features import breast_mask
    from mammo_interp.mapper import ChannelMapper, MapperConfig
    from models.clip import ClipConfig, ClipModel
    from models.device import Precision
    from models.encoders import ImageEncoderConfig

    torch.manual_seed(0)
    model = ClipModel(ClipConfig(image=ImageEncoderConfig(weights="none"))).eval()
    images = torch.rand(3, 1, 96, 64) * 0.5 + 0.25
    maps = model.image_encoder.feature_map(images[:1])
    mapper = ChannelMapper(int(np.prod(maps.shape[2:])), model.config.embed_dim, MapperConfig().hidden).eval()
    masks = torch.from_numpy(np.stack([breast_mask(image[0].numpy()) for image in images]))
    text = torch.randn(model.config.embed_dim)
    cpu = torch.device("cpu")
    same = device_bench.agreement_with_cpu(model, mapper, text, images, masks, Precision(cpu, None))
    assert same == {"embedding_max_abs_diff_vs_cpu": 0.0, "heatmap_max_abs_diff_vs_cpu": 0.0}
    mixed = device_bench.agreement_with_cpu(model, mapper, text, images, masks, Precision(cpu, torch.bfloat16))
    assert 0 < mixed["embedding_max_abs_diff_vs_cpu"] < 0.5 and 0 < mixed["heatmap_max_abs_diff_vs_cpu"] <= 1
