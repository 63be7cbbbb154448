"""Sampling what a study contains: density, findings per breast, BI-RADS, malignancy, report text.

Labels are drawn before any pixel is rendered, with the dependencies a radiologist would expect:
finding BI-RADS follows VinDr's per-category distribution, mass shape/margin follow the BI-RADS
category (suspicious forms more often at 4-5), malignancy follows BI-RADS, and the breast BI-RADS is
the maximum finding BI-RADS (1, or 2 for benign-only breasts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.data.schema import MASS_MARGINS, MASS_SHAPES
from models.data.synth.config import SynthConfig
from models.data.synth.conspicuity import factor

# finding_birads 3/4/5 per category (VinDr counts, shared/notes/synthetic-mammograms.md); the rare
# categories' split is not published: assumed mostly 3-4.
FINDING_BIRADS_PROBS = {
    "Mass": (568, 496, 162),
    "Suspicious Calcification": (72, 347, 124),
    "Focal Asymmetry": (138, 120, 11),
    "Architectural Distortion": (20, 80, 19),
    "Asymmetry": (83, 13, 1),
    **{c: (5, 4, 1) for c in ("Skin Thickening", "Suspicious Lymph Node", "Nipple Retraction",
                               "Global Asymmetry", "Skin Retraction")},
}
# VinDr-Mammo: 136 of about 2,250 boxes have no finding BI-RADS.
MISSING_BIRADS_PROB = 0.06
# Share of BI-RADS 4-5 masses with suspicious calcifications inside: one box, two categories
# (VinDr rows such as ['Mass', 'Suspicious Calcification']).
CALCIFIED_MASS_PROB = 0.2
# P(malignant | finding BI-RADS): BI-RADS 3 is "probably benign" (<= 2 %), 4 spans 2-95 %, 5 >= 95 %.
MALIGNANCY_BY_BIRADS = {3: 0.02, 4: 0.3, 5: 0.95}
# Mass shape / margin weights by finding BI-RADS: benign-looking forms dominate at 3, suspicious at 5.
SHAPE_WEIGHTS = {3: (4, 5, 1, 2), 4: (2, 3, 3, 2), 5: (1, 1, 6, 2)}
MARGIN_WEIGHTS = {3: (6, 3, 1, 1, 0.5), 4: (2, 2, 3, 3, 2), 5: (0.5, 1, 2, 3, 5)}
# Lesion size (mm): lognormal median and spread per category, calibrated so the *boxes* the renderer
# draws match VinDr's sqrt(area)/height percentiles (analyses.data_statistics; a rendered box is not
# the lesion's nominal size: calcification boxes span their specks, asymmetry boxes their blob).
SIZE_MEDIAN_MM = {
    "Mass": 16.7,
    "Suspicious Calcification": 18.4,
    "Focal Asymmetry": 24.0,
    "Architectural Distortion": 15.2,
    "Asymmetry": 12.8,
    "Skin Thickening": 25.0,
    "Suspicious Lymph Node": 16.0,
    "Nipple Retraction": 14.0,
    "Global Asymmetry": 60.0,
    "Skin Retraction": 12.0,
}
SIZE_SIGMA = {"Mass": 0.5, "Suspicious Calcification": 1.05, "Focal Asymmetry": 0.51,
              "Architectural Distortion": 0.47, "Asymmetry": 0.56, "Global Asymmetry": 0.2}
DEFAULT_SIZE_SIGMA = 0.35
SIZE_RANGE_MM = (4.0, 90.0)
# Which views show the finding (VinDr: masses 504/609 both, 85 MLO-only, 20 CC-only; AD 54/65;
# calcifications 213/229; focal asymmetry always both; asymmetry one view, 75/96 MLO).
VIEW_PROBS = {
    "Mass": (0.83, 0.14, 0.03),
    "Suspicious Calcification": (0.93, 0.04, 0.03),
    "Focal Asymmetry": (1.0, 0.0, 0.0),
    "Architectural Distortion": (0.83, 0.1, 0.07),
    "Asymmetry": (0.0, 0.78, 0.22),
    "Skin Thickening": (0.9, 0.05, 0.05),
    "Suspicious Lymph Node": (0.0, 1.0, 0.0),  # the axilla shows on MLO
    "Nipple Retraction": (0.9, 0.05, 0.05),
    "Global Asymmetry": (1.0, 0.0, 0.0),
    "Skin Retraction": (0.8, 0.12, 0.08),
}
DENSITY_LETTERS = "ABCD"
MAX_FINDINGS_PER_BREAST = 6


@dataclass
class Lesion:
    """One finding inside a breast, in view-independent breast coordinates.

    ``depth`` is the distance from the nipple towards the chest wall as a fraction of the breast
    depth; ``medio_lateral`` (CC axis, + = lateral) and ``cranio_caudal`` (MLO axis, + = superior)
    are in [-1, 1] of the local half-width.
    """

    lesion_id: int
    category: str
    birads: int
    malignant: bool
    size_mm: float
    depth: float
    medio_lateral: float
    cranio_caudal: float
    views: tuple[str, ...]
    shape: str | None = None
    margin: str | None = None
    calcified: bool = False  # a mass with suspicious calcifications inside (one box, two categories)
    birads_recorded: bool = True  # False: the finding row leaves finding_birads empty

    @property
    def categories(self) -> list[str]:
        """The categories its finding row names."""
        return [self.category, "Suspicious Calcification"] if self.calcified else [self.category]


@dataclass
class Breast:
    laterality: str
    density: str
    lesions: list[Lesion] = field(default_factory=list)
    benign_calcifications: bool = False

    @property
    def birads(self) -> int:
        if self.lesions:
            return max(lesion.birads for lesion in self.lesions)
        return 2 if self.benign_calcifications else 1


@dataclass
class Study:
    index: int
    density: str
    breasts: dict[str, Breast]
    report: str = ""


def _choice(rng: np.random.Generator, options, weights) -> object:
    weights = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _sample_location(rng: np.random.Generator) -> tuple[float, float, float]:
    """Depth and quadrant with the upper-outer bias of breast cancer (36-62 % in the UOQ)."""
    depth = float(rng.beta(2.2, 2.0)) * 0.8 + 0.08
    lateral = float(np.clip(rng.normal(0.25, 0.5), -0.9, 0.9))
    superior = float(np.clip(rng.normal(0.2, 0.5), -0.9, 0.9))
    return depth, lateral, superior


def sample_lesion(rng: np.random.Generator, lesion_id: int, category: str, config: SynthConfig) -> Lesion:
    birads = int(_choice(rng, (3, 4, 5), FINDING_BIRADS_PROBS[category]))
    malignant = bool(rng.random() < MALIGNANCY_BY_BIRADS[birads])
    # BI-RADS 5 lesions are mildly larger (VinDr: median 32 vs 18-19 mm for masses).
    median = SIZE_MEDIAN_MM[category] * (1.25 if birads == 5 else 1.0) * factor("size", config.difficulty)
    sigma = SIZE_SIGMA.get(category, DEFAULT_SIZE_SIGMA)
    size = float(np.clip(median * np.exp(rng.normal(0, sigma)), *SIZE_RANGE_MM))
    both, mlo_only, _ = VIEW_PROBS[category]
    u = rng.random()
    views = ("CC", "MLO") if u < both else (("MLO",) if u < both + mlo_only else ("CC",))
    depth, lateral, superior = _sample_location(rng)
    lesion = Lesion(lesion_id, category, birads, malignant, size, depth, lateral, superior, views)
    if category == "Mass":
        lesion.shape = str(_choice(rng, MASS_SHAPES, SHAPE_WEIGHTS[birads]))
        lesion.margin = str(_choice(rng, MASS_MARGINS, MARGIN_WEIGHTS[birads]))
        lesion.calcified = bool(birads >= 4 and rng.random() < CALCIFIED_MASS_PROB)
    lesion.birads_recorded = bool(rng.random() >= MISSING_BIRADS_PROB)
    return lesion


def sample_study(rng: np.random.Generator, index: int, config: SynthConfig) -> Study:
    density = str(_choice(rng, DENSITY_LETTERS, config.density_probs))
    breasts = {side: Breast(side, density) for side in ("R", "L")}
    categories = list(config.finding_probs)
    weights = list(config.finding_probs.values())
    lesion_id = 0
    if rng.random() < config.finding_prevalence:
        sides = ["R", "L"] if rng.random() < config.bilateral_fraction else [str(rng.choice(["R", "L"]))]
        for side in sides:
            chosen = [str(_choice(rng, categories, weights))]
            # Further findings, of any category (VinDr: 1-7 boxes per image, 1.27 on average).
            while len(chosen) < MAX_FINDINGS_PER_BREAST and rng.random() < config.second_finding_prob:
                chosen.append(str(_choice(rng, categories, weights)))
            for category in chosen:
                breasts[side].lesions.append(sample_lesion(rng, lesion_id, category, config))
                lesion_id += 1
    for breast in breasts.values():
        # Benign, unboxed calcifications make BI-RADS 2 breasts and act as distractors.
        breast.benign_calcifications = bool(rng.random() < 0.25)
    study = Study(index, density, breasts)
    study.report = write_report(study, rng)
    return study


DENSITY_PHRASES = {
    "A": "The breasts are almost entirely fatty.",
    "B": "There are scattered areas of fibroglandular density.",
    "C": "The breasts are heterogeneously dense, which may obscure small masses.",
    "D": "The breasts are extremely dense, which lowers the sensitivity of mammography.",
}
SIDE_NAMES = {"R": "right", "L": "left"}


def _clock(lesion: Lesion, side: str) -> int:
    """Clock-face position as the radiologist faces the patient (lateral right = 9, left = 3)."""
    angle = np.degrees(np.arctan2(lesion.cranio_caudal, lesion.medio_lateral))
    lateral_hour = 9 if side == "R" else 3
    direction = 1 if side == "R" else -1  # superior is 12 on both sides
    hour = lateral_hour + direction * angle / 30.0
    return int(round(hour - 1)) % 12 + 1


def _describe(lesion: Lesion, side: str) -> str:
    where = f"in the {SIDE_NAMES[side]} breast at {_clock(lesion, side)} o'clock"
    size = f"{lesion.size_mm:.0f} mm"
    views = "" if len(lesion.views) == 2 else f", seen only on the {lesion.views[0]} view"
    if lesion.category == "Mass":
        article = "An" if lesion.shape[0] in "aeiou" else "A"
        calcified = " and associated suspicious calcifications" if lesion.calcified else ""
        return (f"{article} {lesion.shape} mass with {lesion.margin} margins{calcified} measuring {size} "
                f"{where}{views}.")
    if lesion.category == "Suspicious Calcification":
        return f"A cluster of suspicious calcifications spanning {size} {where}{views}."
    if lesion.category == "Architectural Distortion":
        return f"Architectural distortion {where}{views}."
    if lesion.category == "Focal Asymmetry":
        return f"A focal asymmetry measuring {size} {where}."
    if lesion.category == "Asymmetry":
        return f"An asymmetry {where}{views}."
    side_name = SIDE_NAMES[side]
    return {
        "Skin Thickening": f"Skin thickening over the {side_name} breast.",
        "Suspicious Lymph Node": f"An enlarged dense lymph node without a fatty hilum in the {side_name} axilla.",
        "Nipple Retraction": f"Retraction of the {side_name} nipple.",
        "Global Asymmetry": f"A global asymmetry of the {side_name} breast.",
        "Skin Retraction": f"Skin retraction in the {side_name} breast at {_clock(lesion, side)} o'clock.",
    }[lesion.category]


def write_report(study: Study, rng: np.random.Generator) -> str:
    """A templated free-text report: composition, findings per breast, impression with BI-RADS."""
    lines = [DENSITY_PHRASES[study.density]]
    for side in ("R", "L"):
        breast = study.breasts[side]
        if breast.lesions:
            lines.extend(_describe(lesion, side) for lesion in breast.lesions)
        elif breast.benign_calcifications:
            lines.append(f"Scattered benign-appearing calcifications in the {SIDE_NAMES[side]} breast.")
        else:
            lines.append(
                str(rng.choice([f"No suspicious findings in the {SIDE_NAMES[side]} breast.",
                                f"The {SIDE_NAMES[side]} breast is unremarkable."]))
            )
    overall = max(b.birads for b in study.breasts.values())
    lines.append(f"Impression: BI-RADS {overall}.")
    return " ".join(lines)
