"""The package's one figure style: fonts and layout (:func:`styled`), heatmap overlays with a
transparency ramp and a colorbar, box overlays, ordered legends, reader's labels, PNG+PDF saving,
and the text-overlap check the figure tests use."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from models.io import atomic_write

# Sizes for a two-column paper figure read at 100 %: 7 pt text, 6 pt ticks, TrueType fonts in the
# PDF (editable, accepted by journals), constrained layout so titles and labels never collide.
STYLE = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
    "legend.fontsize": 6, "figure.titlesize": 8, "figure.constrained_layout.use": True,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "savefig.dpi": 200,
}
HEAT_CMAP = "inferno"
ORDINAL_CMAP = "viridis"  # ordered labels (density A-D, BI-RADS 1-5) get a sequential palette
F = TypeVar("F", bound=Callable[..., Any])

# Colour-blind-safe (Okabe-Ito) colours per finding category.
CATEGORY_COLORS = {
    "Mass": "#E69F00",
    "Suspicious Calcification": "#56B4E9",
    "Architectural Distortion": "#CC79A7",
    "Focal Asymmetry": "#009E73",
    "Asymmetry": "#F0E442",
    "Suspicious Lymph Node": "#0072B2",
    "Skin Retraction": "#882255",
    "Skin Thickening": "#999999",
    "Nipple Retraction": "#332288",
    "Global Asymmetry": "#117733",
}
DEFAULT_COLOR = "#D55E00"
QUALITATIVE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def styled(draw: F) -> F:
    """Run a figure-making function inside the package style (fonts, constrained layout)."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def heat_overlay(ax: Axes, image: np.ndarray, heat: np.ndarray, max_alpha: float = 0.7) -> ScalarMappable:
    """A grey image under a ``[0, 1]`` heatmap whose opacity rises with its value (0 is clear), so
    low heat never darkens tissue and coarse maps do not show as blocks. Returns the mappable for
    :func:`heat_colorbar`."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0, 1)
    rgba = plt.get_cmap(HEAT_CMAP)(heat)
    rgba[..., 3] = max_alpha * np.clip(heat / 0.5, 0, 1) ** 1.5  # clear near 0, full from half the peak
    ax.imshow(rgba, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    return ScalarMappable(Normalize(0, 1), HEAT_CMAP)


def heat_colorbar(fig: Figure, axes: Any, mappable: ScalarMappable, label: str = "heat (min–max in the breast)") -> None:
    """One colorbar for a grid of heatmap panels; opacity rises with heat as in the panels."""
    bar = fig.colorbar(mappable, ax=axes, shrink=0.5, aspect=30, pad=0.01)
    bar.set_label(label)
    bar.ax.tick_params(labelsize=6)


def view_label(laterality: str, view: str, image_id: str | None = None) -> str:
    """How a reader names an image: ``"R CC"``, with a short id on a second line when given."""
    label = f"{laterality} {view}"
    return f"{label}\n{image_id[:8]}" if image_id else label


def ordered(labels: Iterable[Any], order: Sequence[Any] | None = None) -> list[Any]:
    """The distinct labels in ``order`` (unknown ones after it, sorted), for legends that read
    BI-RADS 1, 2, 3, ... and density A, B, C, D."""
    present = list(dict.fromkeys(labels))
    known = [label for label in (order or []) if label in present]
    rest = sorted((label for label in present if label not in known), key=str)
    return known + rest


def palette(labels: Sequence[Any], ordinal: bool) -> dict[Any, Any]:
    """One colour per label: sequential for ordinal labels, colour-blind-safe qualitative otherwise."""
    if ordinal:
        colors = plt.get_cmap(ORDINAL_CMAP)(np.linspace(0.05, 0.9, max(len(labels), 2)))
    else:
        colors = [QUALITATIVE[k % len(QUALITATIVE)] for k in range(len(labels))]
    return dict(zip(labels, colors))


def legend_handles(colors: dict[Any, Any]) -> list[Line2D]:
    """Round markers labelled by ``colors``' keys, in its order (legends independent of drawing order)."""
    return [Line2D([], [], linestyle="none", marker="o", markersize=4, color=color, label=str(label))
            for label, color in colors.items()]


def text_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of ``fig`` whose drawn boxes overlap (after layout), by
    their strings; tick labels of one axis are left out (matplotlib spaces those itself)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and not _is_tick_label(t)]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def _is_tick_label(text: Text) -> bool:
    return any(text in axis.get_ticklabels(which="both") for ax in text.figure.axes
               for axis in (ax.xaxis, ax.yaxis))


def draw_boxes(ax: Axes, boxes: Iterable[Sequence], labels: Iterable[str] | None = None,
               color: str | None = None, linewidth: float = 1.2, linestyle: str = "-") -> None:
    """Draw ``xyxy`` pixel boxes (max edges exclusive) on an image axis, coloured by label."""
    labels = list(labels) if labels is not None else None
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        label = labels[k] if labels is not None else None
        edge = color or CATEGORY_COLORS.get(label, DEFAULT_COLOR)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=edge,
                               linewidth=linewidth, linestyle=linestyle))


def save_figure(fig: Figure, path: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats``, each file written atomically."""
    path = Path(path)
    written = [atomic_write(path.with_suffix("." + fmt),
                            lambda stream, fmt=fmt: fig.savefig(stream, format=fmt, dpi=dpi, bbox_inches="tight"))
               for fmt in formats]
    plt.close(fig)
    return written
