"""Scale benchmark (not a test): ``python -m analyses.device_bench [--device cuda]`` writes
``reports/device_bench/<device type>.{md,csv,tex,json}``.

The same script on a CPU and on a GPU gives the figures side by side: for the default encoder
(EfficientNet-Lite0 at 256 x 160) and a Mammo-CLIP-size one (EfficientNet-B5 at 1520 x 912, random
initialization: speed and memory do not depend on the weights), at float32 and with bfloat16
autocast, it measures contrastive pretraining steps per image (forward, InfoNCE, backward, AdamW),
image embeddings per second, FActOR box prediction against a bare backbone forward, and peak memory
(GPU: the allocator's peak; CPU: the process's peak RSS), and how far the device's outputs are from
the same model's float32 outputs on the CPU (unit-norm image embeddings and FActOR's [0, 1] heatmaps
of the first two images: the largest absolute difference; 0 for float32 on the CPU itself). Each
(encoder, precision) case runs in a fresh process; timed steps follow one warm-up step and end
with a device synchronization.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import models  # noqa: F401  (runtime set-up first)
import numpy as np
import pandas as pd
import torch

from analyses.bench import isolated, machine
from models.cli import parse_command, run_main
from models.device import Precision, resolve_device, synchronize
from models.io import save_json
from models.report_tables import write_table
from models.run_options import device_field, threads_field
from models.run_record import portable

# name -> (timm encoder, input H, W, images per step on a GPU, on a CPU)
ENCODERS: dict[str, tuple[str, int, int, int, int]] = {
    "lite0": ("tf_efficientnet_lite0", 256, 160, 64, 16),
    "b5": ("tf_efficientnet_b5", 1520, 912, 8, 1),
}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class DeviceBenchConfig:
    """Which encoders, precisions and how many timed steps."""

    encoders: tuple[str, ...] = field(default=tuple(ENCODERS), metadata={"help": f"cases: {list(ENCODERS)}"})
    precisions: tuple[str, ...] = field(default=PRECISIONS, metadata={
        "help": "fp32 and/or bf16 (autocast; the mixed precision --precision auto picks on recent GPUs)"})
    steps: int = field(default=3, metadata={"help": "timed steps per measure (after one warm-up step)"})
    batch_size: int = field(default=0, metadata={
        "help": "images per step; 0: per encoder, 64 / 8 on a GPU and 16 / 1 on a CPU (lite0 / b5)"})
    device: str = device_field()
    threads: int = threads_field()
    report_dir: str = field(default="reports/device_bench", metadata={"help": "where the tables go"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.encoders) - set(ENCODERS)) + sorted(set(self.precisions) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"unknown cases {unknown}; encoders: {list(ENCODERS)}, precisions: {list(PRECISIONS)}")
        if self.steps < 1 or self.batch_size < 0:
            raise ValueError(f"need steps >= 1 and batch_size >= 0, got {self.steps}, {self.batch_size}")


def _timed(run: Callable[[], Any], steps: int, device: torch.device) -> float:
    """Seconds per call of ``run`` over ``steps`` calls after one warm-up call."""
    run()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def agreement_with_cpu(model: torch.nn.Module, mapper: torch.nn.Module, text_embedding: torch.Tensor,
                       images: torch.Tensor, masks: torch.Tensor, amp: Precision, n: int = 2) -> dict[str, float]:
    """Largest |difference| between the device's outputs under ``amp`` and a float32 CPU copy's, on
    the first ``n`` images: unit-norm embeddings ``(n, D)`` and FActOR head heatmaps (top-3
    channels, normalized to [0, 1] in the breast mask)."""
    from mammo_interp import heatmaps as hm
    from mammo_interp.methods.channels import factor_weights

    def outputs(clip: torch.nn.Module, channel_mapper: torch.nn.Module, batch: torch.Tensor,
                autocast: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), autocast:
            embeddings = clip.encode_image(batch).float().cpu()
            maps = clip.image_encoder.feature_map(batch)
        weights = factor_weights(channel_mapper, maps.float(), text_embedding.to(maps.device), 3)
        return embeddings, hm.channel_heatmaps(maps, weights, masks[:n].to(maps.device)).cpu()

    device_embeddings, device_heatmaps = outputs(model, mapper, images[:n], amp.autocast())
    cpu_embeddings, cpu_heatmaps = outputs(copy.deepcopy(model).cpu().float(), copy.deepcopy(mapper).cpu(),
                                           images[:n].cpu().float(), Precision(torch.device("cpu"), None).autocast())
    return {"embedding_max_abs_diff_vs_cpu": (device_embeddings - cpu_embeddings).abs().max().item(),
            "heatmap_max_abs_diff_vs_cpu": (device_heatmaps - cpu_heatmaps).abs().max().item()}


def bench_case(encoder: str, precision: str, steps: int, batch_size: int, device_spec: str) -> dict[str, Any]:
    """Pretraining, embedding and FActOR figures of one (encoder, precision) on one device."""
    from mammo_interp.boxes import BoxRule
    from mammo_interp.box_timing import channel_method, time_box_prediction
    from mammo_interp.methods import MethodContext
    from mammo_interp.methods.channels import FACTOR
    from mammo_interp.features import breast_mask
    from mammo_interp.mapper import ChannelMapper, MapperConfig
    from models.clip import ClipConfig, ClipModel
    from models.encoders import ImageEncoderConfig
    from models.losses import clip_loss
    from models.text import attribute_sentences

    device = resolve_device(device_spec)
    name, height, width, gpu_batch, cpu_batch = ENCODERS[encoder]
    batch = batch_size or (gpu_batch if device.type == "cuda" else cpu_batch)
    amp = Precision.resolve(precision, device)
    torch.manual_seed(0)
    weights = "default" if encoder == "lite0" else "none"
    model = ClipModel(ClipConfig(image=ImageEncoderConfig(name=name, weights=weights))).to(device)
    images = (torch.rand(batch, 1, height, width) * 0.5 + 0.25).to(device)
    sentences = attribute_sentences("mass")
    texts = [sentences[i % len(sentences)] for i in range(batch)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = amp.scaler()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        with amp.autocast():
            loss = clip_loss(model.encode_image(images), model.encode_text(texts), model.logit_scale())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    train_s = _timed(train_step, steps, device)
    train_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    model.eval()
    with torch.no_grad(), amp.autocast():
        embed_s = _timed(lambda: model.encode_image(images), steps, device)
        image_encoder = model.image_encoder
        maps = image_encoder.feature_map(images[:1])
        mapper = ChannelMapper(int(np.prod(maps.shape[2:])), model.config.embed_dim, MapperConfig().hidden).eval()
        masks = torch.from_numpy(np.stack([breast_mask(image[0].float().cpu().numpy()) for image in images]))
        text_embedding = torch.randn(model.config.embed_dim)
        speed = time_box_prediction(image_encoder, channel_method(image_encoder, "head", FACTOR, MethodContext(text_embedding=text_embedding, mapper=mapper)),
                                    images, masks, BoxRule(), batch_size=batch, repeats=steps)
    agreement = agreement_with_cpu(model, mapper.to(device), text_embedding, images, masks, amp)
    result = {"encoder": name, "input": f"{height}x{width}", "precision": precision, "device": str(device),
              "batch": batch, "pretrain_images_per_s": batch / train_s, "embed_images_per_s": batch / embed_s,
              "factor_boxes_over_forward": speed["ratio"], **agreement}
    if device.type == "cuda":
        result["peak_gpu_train_mb"] = train_peak
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def run_bench(config: DeviceBenchConfig) -> pd.DataFrame:
    """One row per (encoder, precision), each measured in a fresh process (its peak RSS added)."""
    return pd.DataFrame([isolated(bench_case, encoder, precision, config.steps, config.batch_size, config.device)
                         for encoder in config.encoders for precision in config.precisions])


def _cell(value: float) -> str:
    """Three significant digits, without exponents for large values (MB, images/s)."""
    return "" if value != value else f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(DeviceBenchConfig, argv, "python -m analyses.device_bench",
                          "Pretraining and embedding throughput, FActOR's cost and peak memory of the default "
                          "encoder (Lite0, 256x160) and a Mammo-CLIP-size one (B5, 1520x912) at fp32 and bf16, "
                          "on --device; writes REPORT_DIR/<device type>.md/.csv/.tex/.json.")
    device = resolve_device(config.device)
    frame = run_bench(config)
    shown = frame.assign(**{column: [_cell(v) for v in frame[column]]
                            for column in frame.columns if frame[column].dtype.kind == "f"})
    where = machine() + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    stem = Path(config.report_dir) / device.type
    write_table(shown, stem, caption=f"Scale benchmark on {where}; each case in a fresh process; "
                                     f"{config.steps} timed steps after a warm-up.", label=f"tab:device-bench-{device.type}")
    save_json(stem.with_suffix(".json"), {"machine": where, "config": portable(asdict(config)),
                                          "rows": frame.to_dict(orient="records")})
    print(shown.to_string(index=False))
    return frame


if __name__ == "__main__":
    run_main(main)
