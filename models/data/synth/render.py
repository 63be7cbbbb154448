"""Rendering one view: attenuation map -> detector blur -> quantum noise -> stored 16-bit values.

One pipeline for every image (pitfall 4 in the notes): exposure, the display curve and the DICOM
window are derived from the *lesion-free* attenuation map, so no label changes the processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from models.data.synth import lesions as L
from models.data.synth.anatomy import BreastShape, build_view, lesion_center
from models.data.synth.conspicuity import factor
from models.data.synth.findings import Breast, Lesion
from models.data.synth.texture import gland_fraction, linear_structures


@dataclass
class RenderedView:
    stored: np.ndarray  # uint16 (H, W), display convention MONOCHROME2 (bright = dense)
    bits_stored: int
    window: tuple[float, float]  # (center, width) over the breast, in stored values
    boxes: list[tuple[Lesion, tuple[float, float, float, float]]] = field(default_factory=list)


def _valid_center(geometry, x: float, y: float, margin_px: float) -> bool:
    h, w = geometry.breast.shape
    xi, yi = int(x), int(y)
    if not (0 <= xi < w and 0 <= yi < h):
        return False
    return geometry.inner_distance_px[yi, xi] > margin_px and geometry.pectoral[yi, xi] == 0


def place(geometry, view: str, lesion: Lesion, breast_depth_px: float, radius_px: float) -> tuple[float, float]:
    """Lesion centre inside the breast, away from skin and muscle; moved towards the nipple line
    (and, on MLO, forward out of the muscle) when the sampled breast coordinates fall outside.

    ``breast_depth_px`` is the CC nipple-to-chest-wall depth, shared by both views of the breast.
    """
    depth, ml, cc = lesion.depth, lesion.medio_lateral, lesion.cranio_caudal
    margin = max(2.0, 0.6 * radius_px)
    for _ in range(12):
        x, y = lesion_center(geometry, view, depth * breast_depth_px, ml, cc)
        if _valid_center(geometry, x, y, margin):
            return x, y
        ml, cc = 0.8 * ml, 0.8 * cc
        depth = depth * 0.93 if geometry.pectoral.any() else depth
    # Last resort: the deepest interior point that is not muscle.
    inner = np.where(geometry.pectoral > 0, 0, geometry.inner_distance_px)
    yi, xi = np.unravel_index(np.argmax(inner), inner.shape)
    return float(xi) + 0.5, float(yi) + 0.5


TISSUE_ASYMMETRIES = ("Focal Asymmetry", "Asymmetry", "Global Asymmetry")
RETRACTIONS = ("Skin Retraction", "Nipple Retraction")
# Share of boxes near an image edge that are drawn past it (calibrated to VinDr's 1.6 % of all boxes).
EDGE_OVERSHOOT_PROB = 0.8


def _center(geometry, view: str, lesion: Lesion, breast_depth_px: float, radius_px: float,
            rng: np.random.Generator) -> tuple[float, float]:
    """Where a finding sits: axillary nodes high near the chest wall (MLO), nipple retraction at the
    nipple, skin findings on the skin line in front of their sampled position, others inside."""
    h, w = geometry.breast.shape
    if lesion.category == "Suspicious Lymph Node":
        for _ in range(20):  # in the axillary tail, clear of the muscle
            x, y = rng.uniform(0.04, 0.3) * w, rng.uniform(0.1, 0.45) * h
            if _valid_center(geometry, x, y, radius_px):
                return x, y
    if lesion.category == "Nipple Retraction":
        return geometry.nipple
    x, y = place(geometry, view, lesion, breast_depth_px, radius_px)
    if lesion.category in ("Skin Thickening", "Skin Retraction"):
        return L.skin_point(geometry.breast, x, y)
    return x, y


def _lesion_rngs(seed_root: tuple[int, ...], lesion: Lesion, view: str):
    view_code = 0 if view == "CC" else 1
    shared = np.random.default_rng([*seed_root, 1000 + lesion.lesion_id])
    per_view = np.random.default_rng([*seed_root, 2000 + lesion.lesion_id, view_code])
    return shared, per_view


def render_view(breast: Breast, shape: BreastShape, view: str, height: int, width: int,
                mm_per_px: float, difficulty: float, seed_root: tuple[int, ...]) -> RenderedView:
    """Render one view of one breast in VinDr orientation (R images mirrored)."""
    rng = np.random.default_rng([*seed_root, 0 if view == "CC" else 1])
    geometry = build_view(shape, view, height, width, mm_per_px, rng)
    gland = gland_fraction(geometry.breast, geometry.inner_distance_px, breast.density, mm_per_px, rng)
    lines = linear_structures(geometry.breast, geometry.nipple, mm_per_px, rng)
    shown = [lesion for lesion in breast.lesions if view in lesion.views]
    boxes: list[tuple[Lesion, tuple[float, float, float, float]]] = []
    extra = np.zeros_like(gland)  # lesion attenuation added after the tissue
    centers: dict[int, tuple[float, float]] = {}
    view_scale = rng.uniform(0.85, 1.2) if view == "MLO" else 1.0  # MLO/CC size ratio ~0.8-1.3
    for lesion in shown:
        size = lesion.size_mm * view_scale
        centers[lesion.lesion_id] = _center(geometry, view, lesion, shape.depth_cc * width, size / 2 / mm_per_px,
                                            _lesion_rngs(seed_root, lesion, view)[1])
    skin = geometry.skin.copy()
    # Tissue-level findings change the gland (or skin) map before attenuation is computed.
    for lesion in shown:
        cx, cy = centers[lesion.lesion_id]
        shared, per_view = _lesion_rngs(seed_root, lesion, view)
        size = lesion.size_mm * view_scale
        if lesion.category in TISSUE_ASYMMETRIES:
            add, box = L.asymmetry(size, cx, cy, mm_per_px, difficulty, gland.shape, shared)
            gland = np.clip(gland + add * geometry.breast, 0, 1)
            boxes.append((lesion, box))
        elif lesion.category == "Architectural Distortion":
            gland = L.warp_towards(gland, cx, cy, size / 2 / mm_per_px, per_view.uniform(0.25, 0.45))
            spicules, box = L.distortion(size, cx, cy, mm_per_px, difficulty, gland.shape, per_view)
            extra += spicules
            boxes.append((lesion, box))
        elif lesion.category in RETRACTIONS:
            strands, box = L.retraction(size, cx, cy, mm_per_px, difficulty, geometry.breast, per_view)
            extra += strands
            boxes.append((lesion, box))
        elif lesion.category == "Skin Thickening":
            thicker, box = L.skin_thickening(geometry.inner_distance_px, cx, cy, size, mm_per_px, per_view)
            skin += thicker
            boxes.append((lesion, box))
    thickness = geometry.thickness
    local_mu = L.MU_FAT + (L.MU_GLAND - L.MU_FAT) * gland
    tissue = (L.MU_FAT * thickness + (L.MU_GLAND - L.MU_FAT) * gland * thickness
              + (L.MU_GLAND - L.MU_FAT) * lines + L.MU_SKIN * skin + L.MU_MUSCLE * geometry.pectoral)
    # Benign distractors belong to the tissue (they are not findings), so they stay in the base map.
    if breast.benign_calcifications:
        c, d = L.benign_calcifications(geometry.breast & (geometry.pectoral == 0), rng)
        tissue += L.render_specks(c, d, mm_per_px, L.MU_CALCIUM * 0.5, tissue.shape)
    if view == "MLO" and rng.random() < 0.5:
        nx = rng.uniform(0.05, 0.2) * width
        ny = rng.uniform(0.15, 0.35) * height
        if geometry.breast[int(ny), int(nx)]:
            L.lymph_node(nx, ny, mm_per_px, rng).add_to(tissue)
    for lesion in shown:
        cx, cy = centers[lesion.lesion_id]
        shared, per_view = _lesion_rngs(seed_root, lesion, view)
        size = lesion.size_mm * view_scale
        if lesion.category == "Mass":
            mu = float(local_mu[int(cy), int(cx)])
            patch, box = L.render_mass(lesion.shape, lesion.margin, size, cx, cy, mm_per_px, mu,
                                       shape.thickness_cm, difficulty, per_view, shared)
            patch.add_to(extra)
            if lesion.calcified:  # specks inside the mass: the same box names both categories
                c, d, _ = L.calcification_cluster(0.6 * size, cx, cy, mm_per_px, True, difficulty, per_view)
                extra += L.render_specks(c, d, mm_per_px, L.MU_CALCIUM, tissue.shape)
            boxes.append((lesion, box))
        elif lesion.category == "Suspicious Lymph Node":
            patch, box = L.suspicious_node(size, cx, cy, mm_per_px, per_view)
            patch.add_to(extra)
            boxes.append((lesion, box))
        elif lesion.category == "Suspicious Calcification":
            c, d, box = L.calcification_cluster(size, cx, cy, mm_per_px, lesion.birads >= 4, difficulty, shared)
            extra += L.render_specks(c, d, mm_per_px, L.MU_CALCIUM, tissue.shape)
            boxes.append((lesion, box))
    attenuation = ndimage.gaussian_filter((tissue + extra) * geometry.breast, 0.6)  # detector MTF
    base = ndimage.gaussian_filter(tissue * geometry.breast, 0.6)
    # Acquisition and display settings are drawn before the noise, from their own stream, and scaled
    # on the lesion-free map: the same breast with or without a lesion is processed identically.
    bits = int(rng.choice([12, 14, 16], p=[0.3, 0.3, 0.4]))
    exposure, headroom, gamma = rng.uniform(0.7, 1.3), rng.uniform(1.05, 1.25), rng.uniform(0.8, 1.3)
    gain, window_margin = rng.uniform(0.85, 1.0), rng.uniform(1.1, 1.3)
    noise_rng = np.random.default_rng([*seed_root, 0 if view == "CC" else 1, 99])
    # Automatic exposure control: photons behind the breast ~ constant; fewer per pixel when pixels
    # are smaller, and fewer at higher difficulty.
    inside = geometry.breast
    behind = float(np.median(base[inside]))
    target = 2500.0 * factor("photons", difficulty) * (512.0 / height) ** 2 * exposure
    photons = target * np.exp(behind)
    counts = noise_rng.poisson(photons * np.exp(-attenuation))
    noisy = -np.log(np.maximum(counts, 0.5) / photons)
    top = float(np.quantile(base[inside], 0.995)) * headroom
    full = (2**bits - 1) * gain
    stored = np.round(np.clip(noisy / top, 0, 1) ** gamma * full).astype(np.uint16)
    base_level = np.clip(base / top, 0, 1) ** gamma * full
    lo, hi = float(np.quantile(base_level[inside], 0.01)), float(base_level[inside].max())
    window = ((lo + hi) / 2, max(hi - lo, 1.0) * window_margin)
    result_boxes = [(lesion, _clip_box(box, geometry.breast)) for lesion, box in boxes if box is not None]
    result_boxes = [(lesion, _annotation_quirk(box, lesion, view, width, height, seed_root))
                    for lesion, box in result_boxes if box is not None]
    if breast.laterality == "R":
        stored = stored[:, ::-1].copy()
        result_boxes = [(lesion, (width - b[2], b[1], width - b[0], b[3])) for lesion, b in result_boxes]
    return RenderedView(stored, bits, window, result_boxes)


def _annotation_quirk(box, lesion: Lesion, view: str, width: int, height: int, seed_root: tuple[int, ...]):
    """Now and then draw a box near the image edge past it, as real annotators do."""
    rng = np.random.default_rng([*seed_root, 3000 + lesion.lesion_id, 0 if view == "CC" else 1])
    return L.overshoot_edge(box, width, height, rng) if rng.random() < EDGE_OVERSHOOT_PROB else box


def _clip_box(box, breast: np.ndarray):
    """Clip a box to the breast's extent; drop it if nothing of it remains."""
    rows, cols = np.nonzero(breast.any(axis=1))[0], np.nonzero(breast.any(axis=0))[0]
    x0, y0 = max(box[0], float(cols[0])), max(box[1], float(rows[0]))
    x1, y1 = min(box[2], float(cols[-1] + 1)), min(box[3], float(rows[-1] + 1))
    return (x0, y0, x1, y1) if x1 - x0 >= 1 and y1 - y0 >= 1 else None
