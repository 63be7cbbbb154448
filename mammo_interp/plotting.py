"""Publication figure helpers shared by every analysis: box overlays and PNG+PDF saving."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from models.io import atomic_write

# Colour-blind-safe (Okabe-Ito) colours per finding category.
CATEGORY_COLORS = {
    "Mass": "#E69F00",
    "Suspicious Calcification": "#56B4E9",
    "Architectural Distortion": "#CC79A7",
    "Focal Asymmetry": "#009E73",
    "Asymmetry": "#F0E442",
}
DEFAULT_COLOR = "#D55E00"


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
