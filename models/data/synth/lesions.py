"""Lesion renderers. Each adds attenuation (cm^-1 x cm, i.e. log-signal units) into a local patch
and reports the lesion's exact bounding box in image pixels (xyxy, max edges exclusive).

Conspicuity is relative to the local tissue, not absolute: a mass replaces the fat/gland mix along
its chord, so it is obvious in fat and nearly masked in dense tissue, as in real mammograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from models.data.synth.conspicuity import factor

MU_FAT, MU_GLAND, MU_SKIN, MU_MUSCLE, MU_CALCIUM = 0.45, 0.80, 0.85, 0.85, 20.0
EDGE_BAND = 0.05  # boxes within this share of the width from an image edge may be drawn past it

Box = tuple[float, float, float, float]


@dataclass
class Patch:
    """Extra attenuation ``delta`` whose top-left pixel is at (x0, y0) in the image."""

    delta: np.ndarray
    x0: int
    y0: int

    def add_to(self, image: np.ndarray) -> None:
        h, w = image.shape
        ph, pw = self.delta.shape
        xa, ya = max(self.x0, 0), max(self.y0, 0)
        xb, yb = min(self.x0 + pw, w), min(self.y0 + ph, h)
        if xa < xb and ya < yb:
            image[ya:yb, xa:xb] += self.delta[ya - self.y0:yb - self.y0, xa - self.x0:xb - self.x0]


def support_box(mask: np.ndarray, x0: int, y0: int) -> Box | None:
    """Tight box (max edges exclusive) of the True pixels of a patch mask, in image coordinates."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))


def _grid(radius_px: float, cx: float, cy: float, scale: float = 2.6):
    half = int(np.ceil(radius_px * scale)) + 2
    x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    yy, xx = np.mgrid[0:2 * half + 1, 0:2 * half + 1]
    return xx + x0 + 0.5 - cx, yy + y0 + 0.5 - cy, x0, y0


def _radius_function(theta: np.ndarray, coeffs: np.ndarray, phases: np.ndarray, first_order: int) -> np.ndarray:
    out = np.ones_like(theta)
    for k, (a, p) in enumerate(zip(coeffs, phases)):
        out += a * np.cos((first_order + k) * theta + p)
    return out


def _spicules(shape: tuple[int, int], cx: float, cy: float, inner_px: float, length_px: float,
              count: int, rng: np.random.Generator, width: int = 1) -> np.ndarray:
    """Straight-ish radiating lines with occasional branches (VICTRE: continue p ~0.72)."""
    h, w = shape
    canvas = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(canvas)
    for angle in rng.uniform(0, 2 * np.pi, count):
        start = np.array([cx + inner_px * np.cos(angle), cy + inner_px * np.sin(angle)])
        stack = [(start, angle, length_px * rng.uniform(0.6, 1.0), 1.0)]
        while stack:
            point, a, remaining, strength = stack.pop()
            segment = max(2.0, 0.25 * length_px)
            steps = 0
            while remaining > 0 and steps < 8:
                a += rng.normal(0, 0.12)
                nxt = point + segment * np.array([np.cos(a), np.sin(a)])
                draw.line([tuple(point), tuple(nxt)], fill=float(strength), width=width)
                if rng.random() < 0.2 and strength > 0.4:
                    stack.append((nxt, a + rng.choice([-1, 1]) * rng.uniform(0.3, 0.7), remaining * 0.5, strength * 0.6))
                point, remaining, steps = nxt, remaining - segment, steps + 1
                strength *= 0.9
    return ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float64), 0.6)


def render_mass(shape_name: str, margin: str, size_mm: float, cx: float, cy: float, mm_per_px: float,
                local_mu: float, thickness_cm: float, difficulty: float, rng: np.random.Generator,
                body_rng: np.random.Generator) -> tuple[Patch, Box]:
    """A mass as a Gaussian-random-sphere-like body with the requested shape and margin."""
    radius_px = size_mm / 2 / mm_per_px
    spic_len = radius_px * rng.uniform(0.6, 1.3) if margin == "spiculated" else 0.0
    dx, dy, x0, y0 = _grid(radius_px + spic_len, cx, cy, scale=1.3)
    rotation = rng.uniform(0, np.pi)
    rx = dx * np.cos(rotation) + dy * np.sin(rotation)
    ry = -dx * np.sin(rotation) + dy * np.cos(rotation)
    aspect = {"round": 1.0, "oval": body_rng.uniform(1.3, 1.8), "lobulated": body_rng.uniform(1.0, 1.3),
              "irregular": body_rng.uniform(1.0, 1.4)}[shape_name]
    ex, ey = rx / np.sqrt(aspect), ry * np.sqrt(aspect)
    theta = np.arctan2(ey, ex)
    r = np.hypot(ex, ey)
    if shape_name == "irregular":
        scale = _radius_function(theta, body_rng.uniform(0.08, 0.2, 4), body_rng.uniform(0, 2 * np.pi, 4), 2)
    elif shape_name == "lobulated":
        scale = _radius_function(theta, body_rng.uniform(0.08, 0.14, 1), body_rng.uniform(0, 2 * np.pi, 1),
                                 int(body_rng.integers(2, 5)))
    else:
        scale = _radius_function(theta, body_rng.uniform(0.0, 0.04, 2), body_rng.uniform(0, 2 * np.pi, 2), 2)
    if margin == "microlobulated":
        scale = scale + _radius_function(theta, rng.uniform(0.03, 0.06, 2), rng.uniform(0, 2 * np.pi, 2), 12) - 1
    rho = r / (radius_px * scale)
    # The mass replaces tissue along its chord, which compression keeps below the breast thickness.
    chord_cm = np.minimum(2 * (size_mm / 20) * np.sqrt(np.clip(1 - rho**2, 0, None)), 0.6 * thickness_cm)
    body = chord_cm > 0
    # Contrast relative to gland: a share of the gland-fat gap, lower at higher difficulty.
    mu_mass = MU_GLAND + (MU_GLAND - MU_FAT) * factor("mass_contrast", difficulty) * rng.uniform(0.7, 1.3)
    delta = (mu_mass - local_mu) * chord_cm
    if margin in ("ill-defined", "obscured"):
        delta = ndimage.gaussian_filter(delta, radius_px * (0.18 if margin == "ill-defined" else 0.1))
    if margin == "obscured":
        # Part of the border hidden: fade one side into the background.
        phi = rng.uniform(0, 2 * np.pi)
        side = (dx * np.cos(phi) + dy * np.sin(phi)) / max(radius_px, 1)
        delta = delta * np.clip(1.2 - 0.8 * np.clip(side, 0, None), 0.35, 1)
    else:
        delta = ndimage.gaussian_filter(delta, 0.5)
    peak = float(delta.max())
    support = delta > 0.1 * peak
    if margin == "spiculated":
        lines = _spicules(delta.shape, -x0 + cx - 0.5, -y0 + cy - 0.5, radius_px * 0.8, spic_len,
                          int(rng.integers(8, 20)), rng)
        delta = delta + 0.45 * peak * lines
        support |= lines > 0.2
    return Patch(delta, x0, y0), support_box(support | body, x0, y0)


def render_specks(centers: np.ndarray, diameters_mm: np.ndarray, mm_per_px: float,
                  mu: float, shape: tuple[int, int]) -> np.ndarray:
    """Sub-pixel calcium specks, area-averaged into pixels by bilinear splatting.

    A speck of diameter d adds mu * d of attenuation over an area pi d^2 / 4; spread over a pixel
    of area p^2 that is mu * d * (pi d^2 / 4) / p^2 in log-signal units.
    """
    out = np.zeros(shape)
    weight = mu * (diameters_mm / 10) * (np.pi * diameters_mm**2 / 4) / mm_per_px**2
    x, y = centers[:, 0] - 0.5, centers[:, 1] - 0.5
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - ix, y - iy
    for ddx, ddy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        px, py = ix + ddx, iy + ddy
        ok = (px >= 0) & (py >= 0) & (px < shape[1]) & (py < shape[0])
        np.add.at(out, (py[ok], px[ok]), (weight * wgt)[ok])
    return out


def calcification_cluster(size_mm: float, cx: float, cy: float, mm_per_px: float, malignant_form: bool,
                          difficulty: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Box]:
    """Speck centres (px) and diameters (mm) of a suspicious cluster, and its box.

    Suspicious forms: fine pleomorphic clusters, or fine linear/branching arrangements. Wider spreads
    (segmental, regional: VinDr's calcification boxes reach 50 mm) hold more specks.
    """
    n = int(rng.integers(6, 25) * max(1.0, size_mm / 15) ** 1.5)
    half = size_mm / 2 / mm_per_px
    if malignant_form and rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        t = rng.uniform(-1, 1, n)
        along = np.stack([np.cos(angle), np.sin(angle)])
        centers = t[:, None] * half * along + rng.normal(0, 0.12 * half, (n, 2))
    else:
        centers = rng.normal(0, 0.45 * half, (n, 2))
        centers = np.clip(centers, -half, half)
    centers = centers + np.array([cx, cy])
    diameters = np.clip(rng.lognormal(np.log(0.25 if malignant_form else 0.2), 0.35, n), 0.1, 0.6)
    diameters = diameters * factor("speck_diameter", difficulty)
    pad = 1.0
    box = (float(np.floor(centers[:, 0].min() - pad)), float(np.floor(centers[:, 1].min() - pad)),
           float(np.ceil(centers[:, 0].max() + pad)), float(np.ceil(centers[:, 1].max() + pad)))
    return centers, diameters, box


def benign_calcifications(breast: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scattered coarse round calcifications (unboxed distractors in BI-RADS 2 breasts)."""
    ys, xs = np.nonzero(breast)
    n = int(rng.integers(3, 12))
    pick = rng.integers(0, len(xs), n)
    centers = np.stack([xs[pick], ys[pick]], 1).astype(float) + rng.uniform(0, 1, (n, 2))
    return centers, rng.uniform(0.6, 2.0, n)


def distortion(size_mm: float, cx: float, cy: float, mm_per_px: float, difficulty: float,
               shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """Architectural distortion: coreless radiating spicules (attenuation map) and their box."""
    length = size_mm / 2 / mm_per_px
    lines = _spicules(shape, cx - 0.5, cy - 0.5, 0.0, length, int(rng.integers(10, 22)), rng)
    lines = lines * (MU_GLAND - MU_FAT) * 0.6 * factor("strands", difficulty)
    box = support_box(lines > 0.05 * lines.max(), 0, 0)
    return lines, box


def warp_towards(gland: np.ndarray, cx: float, cy: float, radius_px: float, strength: float) -> np.ndarray:
    """Pull the tissue towards a point (the retraction of architectural distortion)."""
    h, w = gland.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    pull = strength * np.exp(-(dx**2 + dy**2) / (2 * radius_px**2))
    return ndimage.map_coordinates(gland, [yy + dy * pull, xx + dx * pull], order=1, mode="nearest")


def asymmetry(size_mm: float, cx: float, cy: float, mm_per_px: float, difficulty: float,
              shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """Extra glandular tissue in a lumpy blob with fat mixed in (focal asymmetry / asymmetry).

    Returns the added gland fraction (to be combined with the gland map) and its box.
    """
    radius = size_mm / 2 / mm_per_px
    dx, dy, x0, y0 = _grid(radius, cx, cy, scale=1.6)
    theta = np.arctan2(dy, dx)
    scale = _radius_function(theta, rng.uniform(0.1, 0.25, 3), rng.uniform(0, 2 * np.pi, 3), 2)
    rho = np.hypot(dx * rng.uniform(0.7, 1.0), dy) / (radius * scale)
    blob = np.clip(1 - rho**2, 0, None) ** 0.7
    lumps = ndimage.gaussian_filter(rng.standard_normal(blob.shape), max(1.0, radius / 5))
    lumps = (lumps - lumps.min()) / (np.ptp(lumps) + 1e-9)
    add = blob * (0.4 + 0.6 * lumps) * factor("asymmetry", difficulty)
    full = np.zeros(shape)
    Patch(add, x0, y0).add_to(full)
    return full, support_box(full > 0.15 * full.max(), 0, 0)


def lymph_node(cx: float, cy: float, mm_per_px: float, rng: np.random.Generator) -> Patch:
    """An oval node with a fatty hilum: a benign, unboxed distractor on MLO views."""
    size = rng.uniform(6, 14)
    radius = size / 2 / mm_per_px
    dx, dy, x0, y0 = _grid(radius, cx, cy, scale=1.3)
    rho = np.hypot(dx / 1.5, dy) / radius
    chord = 2 * (size / 20) * np.sqrt(np.clip(1 - rho**2, 0, None))
    hilum = np.exp(-((dx - 0.5 * radius) ** 2 + dy**2) / (2 * (0.35 * radius) ** 2))
    delta = (MU_GLAND - MU_FAT) * chord * (1 - 0.8 * hilum)
    return Patch(ndimage.gaussian_filter(delta, 0.6), x0, y0)


def suspicious_node(size_mm: float, cx: float, cy: float, mm_per_px: float,
                    rng: np.random.Generator) -> tuple[Patch, Box]:
    """An enlarged, dense, round axillary node that has lost its fatty hilum (a suspicious finding)."""
    radius = size_mm / 2 / mm_per_px
    dx, dy, x0, y0 = _grid(radius, cx, cy, scale=1.3)
    rho = np.hypot(dx / rng.uniform(1.0, 1.3), dy) / radius
    chord = 2 * (size_mm / 20) * np.sqrt(np.clip(1 - rho**2, 0, None))
    delta = ndimage.gaussian_filter((MU_GLAND - MU_FAT) * 1.15 * chord, 0.6)
    return Patch(delta, x0, y0), support_box(delta > 0.1 * delta.max(), x0, y0)


def skin_point(breast: np.ndarray, cx: float, cy: float) -> tuple[float, float]:
    """The skin line straight in front of (cx, cy): the breast's last pixel in that row (canonical frame,
    chest wall at x = 0)."""
    row = breast[int(np.clip(cy, 0, breast.shape[0] - 1))]
    if not row.any():
        return cx, cy
    return float(np.flatnonzero(row).max()) + 0.5, cy


def skin_thickening(inner_distance_px: np.ndarray, sx: float, sy: float, size_mm: float, mm_per_px: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, Box | None]:
    """Extra skin attenuation (cm path) along ``size_mm`` of the skin line around (sx, sy): the skin is
    2-4x thicker there (normal skin: 0.5-2.7 mm)."""
    thick_px = rng.uniform(3.0, 6.0) / mm_per_px
    h, w = inner_distance_px.shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    near = np.hypot(xx - sx, yy - sy) < size_mm / 2 / mm_per_px
    band = near & (inner_distance_px > 0) & (inner_distance_px < thick_px)
    extra = np.where(band, 0.35 * np.exp(-inner_distance_px / thick_px), 0.0)
    return extra, support_box(band, 0, 0)


def retraction(size_mm: float, sx: float, sy: float, mm_per_px: float, difficulty: float,
               breast: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Box | None]:
    """Skin or nipple retraction: dense tethering strands converging on a point just inside the skin at
    (sx, sy), inside the breast (attenuation map), and their box. (The skin line itself keeps its
    outline: the dent is not modelled.)"""
    length = size_mm / 2 / mm_per_px
    inward = sx - 0.3 * length  # canonical frame: the breast interior lies towards x = 0
    lines = _spicules(breast.shape, inward - 0.5, sy - 0.5, 0.0, length, int(rng.integers(5, 10)), rng)
    lines = lines * breast * (MU_GLAND - MU_FAT) * factor("strands", difficulty)
    if not lines.any():
        return lines, None
    return lines, support_box(lines > 0.05 * lines.max(), 0, 0)


def overshoot_edge(box: Box, width: int, height: int, rng: np.random.Generator) -> Box:
    """The annotation quirk of real data: a box near an image edge drawn past it by 1.4-41 px
    (VinDr-Mammo: 36 boxes, median 6.2 px; mostly on the chest-wall side, a few at the top/bottom)."""
    x0, y0, x1, y1 = box
    past = float(np.clip(rng.lognormal(np.log(6.2), 0.9), 1.4, 41.0))
    gaps = {"left": x0, "top": y0, "bottom": height - y1}
    edge = min(gaps, key=gaps.get)
    if gaps[edge] > EDGE_BAND * width:
        return box
    return {"left": (-past, y0, x1, y1), "top": (x0, -past, x1, y1), "bottom": (x0, y0, x1, height + past)}[edge]

