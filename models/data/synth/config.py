"""Generator settings. Defaults aim at VinDr-Mammo's facts, with findings **enriched** so that a few
hundred studies hold enough lesions to train and evaluate on (half the studies have findings, every
density class is common); :meth:`SynthConfig.with_prevalence` ``("vindr")`` (``--prevalence vindr``)
gives VinDr-Mammo's own rates instead."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from models.errors import check_choice

GENERATOR_VERSION = "1.2.0"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    ``difficulty`` in [0, 1] scales lesion conspicuity: it lowers lesion contrast relative to the
    glandular tissue, shrinks lesions, and raises quantum noise (:mod:`.conspicuity`). 0.75 is the
    default task (generator 1.1.0's 0.5); below 0.5 lesions are easier than 1.1.0 could make them.
    """

    n_studies: int = field(default=200, metadata={"help": "number of 4-view studies"})
    seed: int = field(default=0, metadata={"help": "random seed; same seed, same bytes"})
    image_height: int = field(default=512, metadata={"help": "rows of the main detector format (30 cm)"})
    difficulty: float = field(default=0.75, metadata={
        "help": "0 easy .. 1 hard: lesion contrast, size, noise (1.1.0's d is (1 + d) / 2 here)"})
    test_fraction: float = field(default=0.2, metadata={"help": "fraction of studies in the test split"})
    # Fraction of studies with at least one suspicious finding (VinDr: ~18 %; enriched here).
    finding_prevalence: float = field(default=0.5, metadata={"help": "fraction of studies with findings"})
    # Probability that a finding study has findings in both breasts.
    bilateral_fraction: float = field(default=0.1, metadata={"help": "finding studies with both breasts affected"})
    # Density A-D (VinDr 0.5/9.5/76.5/13.5 %; US ~10/40/40/10 %): a middle ground so every class occurs.
    density_probs: tuple[float, ...] = field(
        default=(0.10, 0.30, 0.45, 0.15), metadata={"help": "probabilities of density A, B, C, D"})
    finding_probs: dict[str, float] = field(
        metadata={"help": "finding category probabilities"},
        default_factory=lambda: {
            "Mass": 0.47,
            "Suspicious Calcification": 0.23,
            "Focal Asymmetry": 0.09,
            "Architectural Distortion": 0.07,
            "Asymmetry": 0.07,
            "Skin Thickening": 0.02,
            "Suspicious Lymph Node": 0.02,
            "Nipple Retraction": 0.015,
            "Global Asymmetry": 0.01,
            "Skin Retraction": 0.005,
        }
    )
    # Probability that a breast with findings carries one more (asked again after each, up to 6).
    second_finding_prob: float = field(default=0.25, metadata={
        "help": "P(one more finding in a breast with findings), asked again after each"})
    # Storage mix (VinDr holds both photometric interpretations; some sites compress).
    monochrome1_fraction: float = field(default=0.5, metadata={"help": "studies stored as MONOCHROME1"})
    jpeg2000_fraction: float = field(default=0.15, metadata={"help": "studies stored JPEG 2000 compressed"})
    window_tag_fraction: float = field(default=0.7, metadata={"help": "images carrying a VOI window"})

    def __post_init__(self) -> None:
        if self.n_studies < 1:
            raise ValueError(f"n_studies must be >= 1, got {self.n_studies}")
        if not 64 <= self.image_height <= 4096:
            raise ValueError(f"image_height must be in [64, 4096], got {self.image_height}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if abs(sum(self.density_probs) - 1) > 1e-6 or abs(sum(self.finding_probs.values()) - 1) > 1e-6:
            raise ValueError("density_probs and finding_probs must each sum to 1")

    def with_prevalence(self, preset: str) -> "SynthConfig":
        """This config with the finding and density rates of ``preset`` (:data:`PREVALENCES`)."""
        check_choice("prevalence", preset, PREVALENCES)
        return replace(self, **PREVALENCES[preset])

    @property
    def mm_per_pixel(self) -> float:
        """Pixel pitch: the full image height spans a 30 cm detector, as VinDr's 3518 rows do."""
        return 300.0 / self.image_height

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), so it equals what metadata.json or a card holds."""
        return json.loads(json.dumps(asdict(self)))


# VinDr-Mammo v1.0's rates: 18.5 % of studies with a box, one breast in 881 of 924, density
# 0.5/9.5/76.5/13.5 %, categories in proportion to its image labels (Mass 1,226 ... Skin Retraction 18).
_VINDR_LABELS = {"Mass": 1226, "Suspicious Calcification": 543, "Focal Asymmetry": 269,
                 "Architectural Distortion": 119, "Asymmetry": 97, "Skin Thickening": 57,
                 "Suspicious Lymph Node": 57, "Nipple Retraction": 37, "Global Asymmetry": 26, "Skin Retraction": 18}
PREVALENCES: dict[str, dict] = {
    "vindr": {
        "finding_prevalence": 0.185,
        "bilateral_fraction": 43 / 924,
        "density_probs": (0.005, 0.095, 0.765, 0.135),
        "finding_probs": {c: n / sum(_VINDR_LABELS.values()) for c, n in _VINDR_LABELS.items()},
    },
}
PREVALENCES["enriched"] = {name: getattr(SynthConfig(), name) for name in PREVALENCES["vindr"]}
