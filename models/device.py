"""Where models run and at what precision: one ``--device`` / ``--precision`` vocabulary for every
entry point and library call.

``--device auto`` (the default) is CUDA when torch sees a GPU, else the CPU, so a command gives on a
CPU machine exactly what it gave before devices existed. Library code follows one rule, captum's:
the model is placed once (``model.to(device)``), data come at call time from anywhere and are moved
to the model's device (:func:`module_device`), and results come back on the CPU, where tables,
figures and caches are made.

Mixed precision (``--precision``): ``auto`` is float32 on the CPU and autocast on CUDA, in bfloat16
where the GPU supports it, else float16 with a gradient scaler (:class:`Precision`). For
reproducible GPU runs, ``torch.backends.cudnn.benchmark`` stays off (its default) and training
seeds call ``torch.use_deterministic_algorithms(True, warn_only=True)``
(:func:`models.training.seed_everything`); set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the
environment for deterministic cuBLAS. Turning ``cudnn.benchmark`` on is faster for fixed input
sizes and gives other rounding.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from models.errors import check_choice

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("auto: float32 on CPU, mixed precision on CUDA (bf16 where supported, else fp16 with "
                  "a gradient scaler); fp32; bf16 (autocast, CPU too); fp16 (autocast + scaler, CUDA only)")
_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_spelling(device: str, precision: str = "auto", workers: int = 0) -> None:
    """Refuse a misspelt ``--device`` or ``--precision``, or a negative ``--workers`` (a config's own
    check, so a config saved on a GPU machine still loads on a CPU one; whether this machine has the
    device is :func:`check_machine`'s question).

    Raises:
        ValueError: naming the flag and the valid values.
    """
    if not _SPELLING.fullmatch(device):
        raise ValueError(f"--device {device!r} is not one of: {DEVICE_HELP}")
    check_choice("--precision", precision, PRECISIONS)
    if workers < 0:
        raise ValueError(f"--workers must be 0 (decode in the main process) or more, got {workers}")


def check_machine(config: Any) -> None:
    """Resolve a config's ``device`` and ``precision`` (where it has them) on this machine; the CLI
    calls it after parsing, so ``--device cuda`` on a machine without a GPU is a usage error.

    Raises:
        ValueError: see :func:`resolve_device` and :meth:`Precision.resolve`.
    """
    if getattr(config, "device", None) is not None:
        Precision.resolve(getattr(config, "precision", "auto"), resolve_device(config.device))


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` a ``--device`` value names, checked against this machine.

    Raises:
        ValueError: a misspelt value, or CUDA (or GPU ``N``) asked for where torch has none; the
            message names the flag and what is available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not _SPELLING.fullmatch(spec):
        raise ValueError(f"--device {spec!r} is not one of: {DEVICE_HELP}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: torch {torch.__version__} sees no CUDA GPU here; "
                             "use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {spec}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for a module with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def loader_options(device: torch.device, workers: int = 0) -> dict[str, Any]:
    """DataLoader keywords for ``workers`` decoding processes feeding ``device``: pinned host memory
    when batches go to a GPU (asynchronous copies), workers kept alive between epochs."""
    return {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}


def to_device(batch: dict[str, Any], device: torch.device, keys: tuple[str, ...] = ("image", "mask")) -> dict[str, Any]:
    """``batch`` with its tensors under ``keys`` on ``device`` (non-blocking from pinned memory);
    other entries (ids, texts, boxes on the CPU) unchanged."""
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) if key in keys and torch.is_tensor(value) else value
            for key, value in batch.items()}


@contextlib.contextmanager
def ieee_float32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in IEEE float32 inside the block, the caller's setting restored after.

    PyTorch lets cuDNN run float32 convolutions in TF32 (10-bit mantissa) by default; measured on an
    H200, the shipped model's head maps then differ from the CPU's by up to 4.6 % of their range,
    enough to move boxes. ``--precision fp32`` means float32 on every device.
    """
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: float32) and whether a gradient scaler is needed, for one device."""

    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def resolve(cls, spec: str, device: torch.device) -> Precision:
        """``--precision`` on ``device``.

        Raises:
            ValueError: an unknown value, or fp16 on the CPU (CPU autocast is bfloat16 only).
        """
        check_choice("--precision", spec, PRECISIONS)
        if spec == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
        if spec == "auto":
            if device.type != "cuda":
                return cls(device, None)
            spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return cls(device, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec])

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast at this precision on this device; at float32, IEEE float32 convolutions on a GPU
        (else a no-op)."""
        if self.dtype is None:
            return ieee_float32_convolutions() if self.device.type == "cuda" else contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def cache_key(self) -> dict[str, str]:
        """What a feature cache key gains from this precision: nothing at float32 (caches made before
        mixed precision existed stay valid), the autocast dtype otherwise (its maps are other numbers)."""
        return {} if self.dtype is None else {"precision": str(self.dtype)}

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active only for float16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_scaler)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (timing a GPU needs it; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
