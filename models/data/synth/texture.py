"""Parenchymal texture: power-law random fields turned into fibroglandular tissue, plus the linear
structures (ducts, ligaments, vessels) that make spicule detection non-trivial.

Mammographic backgrounds have a 1/f^beta power spectrum with beta ~ 2.8-3.3 (Burgess 2003; Chen et al.
2012) and non-Gaussian gray levels (Heine & Velthuizen 1999): we draw a Gaussian 1/f^beta field and
map it nonlinearly into a gland fraction, thresholded so the dense area follows the density class.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

# Dense-tissue area fraction inside the breast per BI-RADS density (4th-ed. area quartiles).
DENSE_AREA = {"A": (0.05, 0.2), "B": (0.25, 0.45), "C": (0.5, 0.7), "D": (0.75, 0.9)}


def power_law_field(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field with power spectrum ~ 1/f^beta."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2)
    amplitude[0, 0] = 0.0
    noise = rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))
    field = np.fft.irfft2(noise * amplitude, s=(h, w))
    return (field - field.mean()) / (field.std() + 1e-12)


def gland_fraction(breast: np.ndarray, inner_px: np.ndarray, density: str, mm_per_px: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Fraction of the compressed thickness occupied by gland, in [0, 1] (0 outside the breast).

    Gland sits away from the skin (subcutaneous fat layer) and thins towards the chest wall.
    """
    h, w = breast.shape
    beta = rng.uniform(2.8, 3.3)
    field = power_law_field((h, w), beta, rng)
    # Clustered lumpy detail (Bochud et al.): a finer field modulating the coarse one.
    field += 0.5 * power_law_field((h, w), 2.0, rng)
    fat_layer_px = rng.uniform(4, 12) / mm_per_px
    envelope = np.clip(inner_px / fat_layer_px, 0, 1) ** 0.7
    # Suppress gland posteriorly (retroglandular fat before the muscle).
    xs = np.arange(w)[None, :] / max(1, w)
    envelope = envelope * np.clip(xs / rng.uniform(0.05, 0.15), 0, 1)
    score = field + 2.0 * (envelope - 1)
    inside = breast & (inner_px > 0)
    target = rng.uniform(*DENSE_AREA[density])
    threshold = np.quantile(score[inside], 1 - target)
    softness = rng.uniform(0.45, 0.8)
    gland = 1 / (1 + np.exp(-(score - threshold) / softness))
    gland = ndimage.gaussian_filter(gland, 0.8) * breast
    return gland * rng.uniform(0.7, 0.95)


def linear_structures(geometry_breast: np.ndarray, nipple: tuple[float, float], mm_per_px: float,
                      rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Thin curvilinear structures converging on the nipple (ducts, Cooper's ligaments) and a few
    longer vessels, as extra attenuation path in cm."""
    h, w = geometry_breast.shape
    canvas = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(canvas)
    ys, xs = np.nonzero(geometry_breast)
    if len(xs) == 0:
        return np.zeros((h, w))
    n = count if count is not None else int(rng.integers(25, 45))
    for k in range(n):
        i = int(rng.integers(len(xs)))
        start = np.array([xs[i], ys[i]], dtype=float)
        vessel = k < 4
        towards = np.array(nipple) - start
        direction = towards / (np.linalg.norm(towards) + 1e-9)
        if vessel:
            direction = np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        length = rng.uniform(15, 60 if not vessel else 120) / mm_per_px
        steps = 8
        points = [tuple(start)]
        point = start.copy()
        for _ in range(steps):
            direction = direction + rng.normal(0, 0.15, 2)
            direction /= np.linalg.norm(direction)
            point = point + direction * length / steps
            points.append(tuple(point))
        width = max(1, int(round((rng.uniform(0.6, 1.5) if not vessel else rng.uniform(1.5, 3.0)) / mm_per_px)))
        draw.line(points, fill=float(rng.uniform(0.05, 0.15) if not vessel else rng.uniform(0.1, 0.25)), width=width)
    lines = ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float64), 0.7)
    return lines * geometry_breast
