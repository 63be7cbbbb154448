"""The attribution-method registry: every method is declared once, here or in a user's module.

A :class:`Method` names what it computes in exactly one of three ways (its *kind*):

- ``channel_weights(context, maps) -> (B, C)``: weights of a layer's ``(B, C, h, w)`` feature maps,
  summed into a heatmap (FActOR and its channel baselines; feature maps may come from a cache);
- ``maps(context, target, layer, *inputs) -> raw maps``: a method that runs the model. ``target``
  is a module giving one score per image (or per exam), ``layer`` the feature module, ``inputs``
  what ``target`` takes (images first). With ``resolution="layer"`` the maps are one per row the
  layer sees, ``(rows, h, w)``; with ``"input"`` they have the images' shape without the channel
  axis (``(B, H, W)``, or ``(B, V, H, W)`` for exams);
- ``mask_maps(masks) -> (N, H, W)``: no model at all (the breast prior).

Studies turn raw maps into ``(N, H, W)`` heatmaps in [0, 1] (upsampled bilinearly, min-max
normalized in the breast mask) and read everything else from the registry: ``--methods`` choices
and help, table row names, what a method needs (:data:`NEEDS`) and whether it runs per view.
Built-in families live one per module (:mod:`.channels`, :mod:`.cams`, :mod:`.gradients`,
:mod:`.occlusion`, :mod:`.prior`), each listing its methods in ``METHODS``; a user's method is one
:func:`register` call in their own module, imported before the study runs, or an entry point in the
``mammo_interp.methods`` group of their distribution (loaded with the built-ins, on first use of
the registry).
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Literal

import torch
from torch import nn

from models.device import module_device
from models.errors import check_choice

KINDS = ("channel", "model", "mask")
NEEDS = {
    "text": "a (D,) text embedding as the target",
    "mapper": "a trained channel mapper (FActOR's studies train or ship one)",
    "validation boxes": "validation boxes to choose a channel",
    "reference": "a supervised reference model",
}
BUILT_IN = ("channels", "cams", "gradients", "occlusion", "prior")
ENTRY_POINT_GROUP = "mammo_interp.methods"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class MethodContext:
    """What a study hands its methods: their options and what some of them need.

    ``mapper``, ``oracle`` and ``reference`` are filled by studies that have them (FActOR's); a
    method that needs one of them (:attr:`Method.needs`) is refused where it is missing.
    """

    text_embedding: torch.Tensor | None = None
    top_k: int = 3
    seed: int = 0
    ig_steps: int = 8
    ig_sigma: float = 4.0
    ig_internal_batch: int | None = None  # exam-steps (or images x steps) per forward; None: a call's all
    cam_channels: int = 16
    logit_scale: float = 100.0
    occlusion_window: int = 64
    occlusion_stride: int = 32
    mapper: nn.Module | None = None
    oracle: Callable[[], int] | None = None  # the channel chosen on validation boxes, computed on first use
    reference: tuple[nn.Module, nn.Module] | None = None  # (score module, feature layer) of the reference
    _mappers: dict[str, nn.Module] = field(default_factory=dict, init=False, repr=False, compare=False)

    def provides(self) -> set[str]:
        """The :data:`NEEDS` this context meets (the text target comes with each call)."""
        given = {"mapper": self.mapper, "validation boxes": self.oracle, "reference": self.reference}
        return {"text", *(need for need, value in given.items() if value is not None)}

    def mapper_on(self, device: torch.device) -> nn.Module:
        """The channel mapper on ``device`` (a copy, made once per device; the study's stays put)."""
        if self.mapper is None:
            raise ValueError("this study has no channel mapper")
        if str(device) not in self._mappers:
            on_device = self.mapper if module_device(self.mapper) == device else copy.deepcopy(self.mapper).to(device)
            self._mappers[str(device)] = on_device
        return self._mappers[str(device)]


@dataclass(frozen=True)
class Method:
    """One attribution method: how it computes (exactly one of ``channel_weights``, ``maps``,
    ``mask_maps``; see the module doc) and what the studies need to know about it."""

    name: str  # the --methods name: lower case, digits, underscores
    label: str  # its row in every table
    family: str  # e.g. "FActOR", "channel baseline", "CAM", "gradient", "perturbation", "prior"
    summary: str  # one line for --help and the docs
    channel_weights: Callable[[MethodContext, torch.Tensor], torch.Tensor] | None = None
    maps: Callable[..., torch.Tensor] | None = None
    mask_maps: Callable[[torch.Tensor], torch.Tensor] | None = None
    resolution: Literal["layer", "input"] = "layer"
    needs: frozenset[str] = frozenset()
    per_view: bool = False  # runs on exams: its maps of an exam-level target, one per present view
    explains: Literal["clip", "reference"] = "clip"  # whose score and layer ``maps`` gets
    batch_size: int = 16  # images per call of ``maps`` in image-level studies
    timed: bool = True  # a method to deploy, timed by box prediction (the reference is a ceiling)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"method name {self.name!r}: expected lower-case letters, digits and underscores")
        ways = [w for w in (self.channel_weights, self.maps, self.mask_maps) if w is not None]
        if len(ways) != 1:
            raise ValueError(f"method {self.name!r}: give exactly one of channel_weights, maps, mask_maps")
        if unknown := sorted(set(self.needs) - set(NEEDS)):
            raise ValueError(f"method {self.name!r}: unknown needs {unknown}; known: {sorted(NEEDS)}")
        if self.per_view and self.maps is None:
            raise ValueError(f"method {self.name!r}: only methods with maps= run per view")

    @property
    def kind(self) -> str:
        """``"channel"``, ``"model"`` or ``"mask"`` (:data:`KINDS`)."""
        return "channel" if self.channel_weights is not None else "model" if self.maps is not None else "mask"


_REGISTRY: dict[str, Method] = {}
_loaded = False


def register(method: Method, replace: bool = False) -> Method:
    """Add ``method`` under its name (a second method of the same name is refused unless ``replace``).
    Returns it, so a module may keep it under a name of its own."""
    _load()
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is registered already ({_REGISTRY[method.name].label}); "
                         "pass replace=True to replace it")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (tests, or a user replacing a family)."""
    _load()
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The registered method ``name``; unknown names: :func:`check`'s one-line error."""
    check((name,), "method")
    return _REGISTRY[name]


def available(kind: str | None = None, per_view: bool | None = None) -> tuple[str, ...]:
    """Registered names in registration order (built-in families first), optionally filtered."""
    _load()
    return tuple(name for name, m in _REGISTRY.items()
                 if (kind is None or m.kind == kind) and (per_view is None or m.per_view == per_view))


def check(names: Iterable[str], flag: str = "--methods", has: Iterable[str] | None = None,
          per_view: bool = False) -> None:
    """One ``ValueError`` line for the first problem with ``names``: an unknown name (with the valid
    ones), a method that does not run per view (``per_view``), or one that needs what the study does
    not have (``has``: keys of :data:`NEEDS`; None: not checked)."""
    _load()
    names = tuple(names)
    check_choice(flag, [n for n in names if n not in _REGISTRY], available(per_view=True) if per_view else available())
    for name in names:
        method = _REGISTRY[name]
        if per_view and not method.per_view:
            raise ValueError(f"{flag}: {name} does not run per view ({method.family}; per view: "
                             f"{', '.join(available(per_view=True))})")
        if has is not None and (missing := sorted(set(method.needs) - set(has))):
            raise ValueError(f"{flag}: {name} needs {' and '.join(NEEDS[m] for m in missing)}, which this run "
                             "does not have")


def labels() -> dict[str, str]:
    """Name -> table row of every registered method."""
    _load()
    return {name: method.label for name, method in _REGISTRY.items()}


def help_text(per_view: bool = False) -> str:
    """The ``--methods`` help: every name (that runs per view, with ``per_view``) and its summary."""
    _load()
    return "; ".join(f"{m.name}: {m.summary}" for m in _REGISTRY.values() if m.per_view or not per_view)


def _load() -> None:
    """Import the built-in families, then the installed plug-ins (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # before the plug-ins: their register() calls come back here
    for module in BUILT_IN:
        _REGISTRY.update({m.name: m for m in importlib.import_module(f"{__name__}.{module}").METHODS})
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken plug-in: say which, do not take the built-ins down with it
            raise ImportError(f"mammo_interp method plug-in {entry.name!r} ({entry.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc


__all__ = ["Method", "MethodContext", "NEEDS", "available", "check", "get", "help_text", "labels",
           "register", "unregister"]
