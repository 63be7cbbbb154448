"""What boxes cost: a method's heatmaps and boxes from raw images, timed against a bare forward.

A localization method deployed on new images runs from pixels: a channel method needs the layer's
feature maps (:func:`channel_method`), a gradient method its forward and backward, and every one the
heatmap -> box rule on the CPU. :func:`time_box_prediction` times that against a bare backbone
forward of the same images (FActOR's budget: 1.2 bare forwards).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mammo_interp import heatmaps as hm
from mammo_interp.boxes import BoxRule
from mammo_interp.methods import Method, MethodContext
from models.allocator import peak_rss_mb
from models.device import module_device, synchronize
from models.encoders import ImageEncoder
from models.training import eval_mode

HeatmapFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(images (B, 1, H, W) on the model's device, masks (B, H, W) bool on the CPU) -> (B, H, W)``
heatmaps in [0, 1] (any device): one localization method from raw images."""


def time_box_prediction(encoder: ImageEncoder, heatmaps: HeatmapFunction, images: torch.Tensor,
                        masks: torch.Tensor, rule: BoxRule, batch_size: int = 32,
                        repeats: int = 2) -> dict[str, Any]:
    """Seconds for boxes from raw ``(N, 1, H, W)`` images by one method (``heatmaps``, then the
    box rule on the CPU, as in use), for its heatmaps alone, and for a bare full backbone forward of
    the same images on the encoder's device, measured back to back (best of ``repeats``), with the
    ratios to the bare forward (FActOR's budget for its boxes: at most 1.2). Gradients stay
    on for the method (gradient methods need them)."""
    device = module_device(encoder)
    images = images.to(device)
    batches = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]

    def bare() -> None:
        with torch.no_grad():
            for part in batches:
                encoder(images[part])
        synchronize(device)

    def maps_only() -> None:
        for part in batches:
            heatmaps(images[part], masks[part])
        synchronize(device)

    def boxes() -> None:
        for part in batches:
            for heatmap, mask in zip(heatmaps(images[part], masks[part]).detach().float().cpu(), masks[part]):
                rule.boxes(heatmap.numpy(), mask.numpy())

    with eval_mode(encoder):
        bare()  # warm-up of both (lazy set-up, allocator)
        heatmaps(images[batches[0]], masks[batches[0]])
        seconds = best_times({"bare": bare, "heatmaps": maps_only, "boxes": boxes}, repeats)
    count = len(images)
    return {"images": count, "bare_forward_s": seconds["bare"], "heatmaps_s": seconds["heatmaps"],
            "boxes_s": seconds["boxes"], "heatmaps_ratio": seconds["heatmaps"] / seconds["bare"],
            "ratio": seconds["boxes"] / seconds["bare"], "boxes_images_per_s": count / seconds["boxes"],
            "bare_images_per_s": count / seconds["bare"], "peak_rss_mb": peak_rss_mb(),
            "threads": torch.get_num_threads(), "device": str(device)}


def channel_method(encoder: ImageEncoder, layer: str, method: Method, context: MethodContext) -> HeatmapFunction:
    """A channel method from raw images: the ``layer`` feature maps ``(B, C, h, w)`` on the encoder's
    device, weighted by ``method`` (:func:`~mammo_interp.heatmaps.feature_heatmaps`; no gradients)."""
    def heatmaps(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = encoder.feature_map(images, layer)
            return hm.feature_heatmaps(method, context, maps, masks.to(maps.device))
    return heatmaps


def best_times(runs: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each run, the runs interleaved (a, b, a, b, ...) so that a
    slow spell of a shared machine hits all of them rather than one, which keeps ratios honest."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}
