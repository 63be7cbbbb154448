"""The torchvision guard, installed once when :mod:`models` is first imported (before timm).

Importing the package changes nothing else in the user's process: no environment variables, no
plotting backend, no global RNG. Nothing is downloaded because every load site says so itself
(``local_files_only=True`` for transformers, ``pretrained=False`` plus packaged weights for timm).

* **torchvision guard.** The torchvision wheel that timm pulls in may be a build whose C extension
  cannot load beside the CPU torch wheel.  torchvision then dies at import with
  ``operator torchvision::nms does not exist`` because it registers fake kernels for ops its own
  library failed to define.  When (and only when) that library cannot be loaded, we define the
  ``torchvision::nms`` / ``torchvision::qnms`` schemas ourselves, with a plain-torch CPU NMS, so
  ``import torchvision`` (and so timm, and transformers' image utilities) works.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_guard_library: torch.library.Library | None = None


def nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression on ``xyxy`` boxes; same contract as ``torchvision.ops.nms``.

    Returns the indices of the kept boxes, sorted by decreasing score.
    """
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep = []
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        w = (torch.minimum(x2, x2[idx]) - torch.maximum(x1, x1[idx])).clamp(min=0)
        h = (torch.minimum(y2, y2[idx]) - torch.maximum(y1, y1[idx])).clamp(min=0)
        inter = w * h
        iou = inter / (areas + areas[idx] - inter).clamp(min=torch.finfo(dets.dtype).tiny)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _torchvision_ops_loadable() -> bool:
    """Whether torchvision's own C extension loads (without importing the torchvision package)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision installed: nothing to guard
    for location in spec.submodule_search_locations:
        for library in glob.glob(os.path.join(location, "_C*.so")) + glob.glob(
            os.path.join(location, "_C*.pyd")
        ):
            try:
                torch.ops.load_library(library)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def install_torchvision_guard() -> bool:
    """Define the missing torchvision NMS ops if torchvision's extension cannot load.

    Idempotent. Returns ``True`` when the guard's ops are in place (now or from an earlier call).
    """
    global _guard_library
    if _guard_library is not None:
        return True
    if "torchvision" in sys.modules or _op_defined("nms") or _torchvision_ops_loadable():
        return False
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        library.define(op + _NMS_SCHEMA)
        library.impl(op, nms_cpu, "CPU")
    _guard_library = library
    return True


def setup() -> None:
    """What must happen before timm/torchvision are imported (only the guard, only if needed)."""
    install_torchvision_guard()
