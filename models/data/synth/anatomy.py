"""Breast geometry per view, from one breast model shared by the CC and MLO views.

Images are built in a canonical frame with the chest wall on the left edge (x = 0) and the nipple
pointing right; right-breast images are mirrored at the end so the chest wall sits on the right edge,
as VinDr stores them. Sizes are fractions of the image width/height unless named ``_px``/``_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class BreastShape:
    """The view-independent breast: how deep it is and how thick it is under compression."""

    depth_cc: float  # nipple-to-chest-wall distance on CC, fraction of image width
    mlo_depth_ratio: float  # MLO depth / CC depth (VinDr: lesion depths 1.2-1.4x larger on MLO)
    half_height_cc: float  # CC half extent along y at the chest wall, fraction of height
    thickness_cm: float
    outline_power: float  # 0.5 = elliptic outline; larger = fuller, more rounded breast
    nipple_y_cc: float
    nipple_y_mlo: float
    pectoral_on_cc: bool

    @staticmethod
    def sample(rng: np.random.Generator, density: str) -> "BreastShape":
        # Denser breasts are thinner under compression (VICTRE: 60/55/45/35 mm for A-D).
        base = {"A": 6.0, "B": 5.5, "C": 4.8, "D": 4.2}[density]
        return BreastShape(
            depth_cc=float(rng.uniform(0.55, 0.82)),
            mlo_depth_ratio=float(rng.uniform(1.08, 1.2)),
            half_height_cc=float(rng.uniform(0.30, 0.42)),
            thickness_cm=float(np.clip(rng.normal(base, 0.7), 3.0, 8.0)),
            outline_power=float(rng.uniform(0.45, 0.75)),
            nipple_y_cc=float(rng.uniform(0.45, 0.55)),
            nipple_y_mlo=float(rng.uniform(0.5, 0.62)),
            pectoral_on_cc=bool(rng.random() < 0.25),
        )


@dataclass
class ViewGeometry:
    """Masks and maps of one view in the canonical frame (chest wall at x = 0)."""

    breast: np.ndarray  # bool (H, W), breast tissue incl. skin
    thickness: np.ndarray  # float (H, W), compressed thickness in cm (0 outside)
    skin: np.ndarray  # float (H, W), extra attenuating skin path in cm
    pectoral: np.ndarray  # float (H, W), muscle path length in cm
    inner_distance_px: np.ndarray  # distance from the skin line inside the breast
    nipple: tuple[float, float]  # (x, y) in pixels
    half_width_px: np.ndarray  # breast half extent along y at each x (for lesion placement)
    center_y_px: np.ndarray  # breast centre line at each x


def _outline_profile(shape: BreastShape, view: str, h: int, w: int, rng: np.random.Generator):
    """Breast extent along x for every row: tissue spans 0 <= x < reach[y]."""
    y = np.arange(h) + 0.5
    if view == "CC":
        depth = shape.depth_cc * w
        yc = shape.nipple_y_cc * h
        half = shape.half_height_cc * h
        u = np.clip(1 - ((y - yc) / half) ** 2, 0, None)
        reach = depth * u ** shape.outline_power
    else:
        depth = shape.depth_cc * shape.mlo_depth_ratio * w
        yc = shape.nipple_y_mlo * h
        bottom = yc + rng.uniform(0.3, 0.4) * h  # inframammary fold
        top_reach = rng.uniform(0.25, 0.45) * w  # axillary tail reaching the top edge
        upper = top_reach + (depth - top_reach) * np.sin(np.clip(y / yc, 0, 1) * np.pi / 2) ** 0.8
        lower = depth * np.clip(1 - ((y - yc) / (bottom - yc)) ** 2, 0, None) ** shape.outline_power
        reach = np.where(y <= yc, upper, lower)
    # Low-order wobble so outlines are not perfect conics.
    phase = rng.uniform(0, 2 * np.pi, 3)
    wobble = sum(0.012 / (k + 1) * np.sin((k + 2) * np.pi * y / h + phase[k]) for k in range(3))
    reach = np.clip(reach * (1 + wobble), 0, w - 2)
    return reach, depth, yc


def build_view(shape: BreastShape, view: str, h: int, w: int, mm_per_px: float,
               rng: np.random.Generator) -> ViewGeometry:
    reach, depth, yc = _outline_profile(shape, view, h, w, rng)
    xx = np.arange(w)[None, :] + 0.5
    breast = xx < reach[:, None]
    # Nipple: a small bump at the most anterior point.
    nipple_x = float(reach.max())
    nipple_y = float(np.argmax(reach)) + 0.5
    radius = 4.0 / mm_per_px
    yy = np.arange(h)[:, None] + 0.5
    breast |= (xx - nipple_x) ** 2 + (yy - nipple_y) ** 2 < radius**2
    inner = ndimage.distance_transform_edt(breast)
    # Thickness falls off over the outer 1-3 cm like a semicircle of radius ~ thickness/2.
    band_px = max(2.0, (shape.thickness_cm * 10 / 2) / mm_per_px * rng.uniform(0.8, 1.4))
    frac = np.clip(inner / band_px, 0, 1)
    thickness = shape.thickness_cm * np.sqrt(1 - (1 - frac) ** 2) * breast
    skin_px = rng.uniform(1.2, 2.2) / mm_per_px  # skin 0.5-2.7 mm
    skin = np.where(breast, 0.25 * np.exp(-inner / max(skin_px, 0.5)), 0.0)
    pectoral = np.zeros((h, w))
    if view == "MLO":
        # Bright triangle in the upper chest-wall corner, edge slightly convex, reaching ~nipple level.
        top_w = rng.uniform(0.25, 0.45) * w
        height = rng.uniform(0.8, 1.05) * yc
        t = np.clip(1 - yy / height, 0, None)
        edge = top_w * t ** rng.uniform(0.8, 1.0)
        inside = (xx < edge) & breast
        pectoral = np.where(inside, np.clip((edge - xx) / (0.15 * w), 0, 1) ** 0.5 * 2.5, 0.0)
        pectoral = ndimage.gaussian_filter(pectoral, 1.0)
    elif shape.pectoral_on_cc:
        half = rng.uniform(0.08, 0.2) * h
        edge = rng.uniform(0.02, 0.06) * w * np.sqrt(np.clip(1 - ((yy - yc) / half) ** 2, 0, None))
        pectoral = np.where((xx < edge) & breast, 1.5, 0.0)
    # Lesion placement frame: for each column, the centre line and half extent of the tissue.
    cols = breast.any(axis=0)
    first = np.where(cols, breast.argmax(axis=0), 0)
    last = np.where(cols, h - 1 - breast[::-1].argmax(axis=0), 0)
    return ViewGeometry(
        breast=breast,
        thickness=thickness,
        skin=skin,
        pectoral=pectoral,
        inner_distance_px=inner,
        nipple=(nipple_x, nipple_y),
        half_width_px=(last - first) / 2.0,
        center_y_px=(last + first) / 2.0,
    )


def lesion_center(geometry: ViewGeometry, view: str, nipple_distance_px: float, medio_lateral: float,
                  cranio_caudal: float) -> tuple[float, float]:
    """Pixel centre of a lesion given its breast coordinates.

    Both views place the lesion at the same distance from the nipple along the nipple line (so its
    depth from the chest wall is larger on the deeper MLO view, as in VinDr pairs); CC shows the
    medio-lateral axis (lateral up), MLO the cranio-caudal axis (superior up).
    """
    nipple_x, nipple_y = geometry.nipple
    x = nipple_x - nipple_distance_px
    col = int(np.clip(x, 0, geometry.breast.shape[1] - 1))
    offset = medio_lateral if view == "CC" else cranio_caudal
    half = geometry.half_width_px[col] * 0.75
    centre = 0.5 * (geometry.center_y_px[col] + nipple_y)
    return float(x), float(centre - offset * half)
