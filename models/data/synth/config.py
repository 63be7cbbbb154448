"""Generator settings. Defaults aim at VinDr-Mammo's facts, with findings enriched so that a few
hundred studies hold enough lesions to train and evaluate on (see ``shared/notes``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

GENERATOR_VERSION = "1.0.0"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    ``difficulty`` in [0, 1] scales lesion conspicuity: it lowers lesion contrast relative to the
    glandular tissue, shrinks lesions, and raises quantum noise. 0.5 is the default task.
    """

    n_studies: int = field(default=200, metadata={"help": "number of 4-view studies"})
    seed: int = field(default=0, metadata={"help": "random seed; same seed, same bytes"})
    image_height: int = field(default=512, metadata={"help": "rows of the main detector format (30 cm)"})
    difficulty: float = field(default=0.5, metadata={"help": "0 easy .. 1 hard: lesion contrast, size, noise"})
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
            "Mass": 0.50,
            "Suspicious Calcification": 0.25,
            "Focal Asymmetry": 0.10,
            "Architectural Distortion": 0.08,
            "Asymmetry": 0.07,
        }
    )
    # Probability that a breast with a finding carries a second, different one.
    second_finding_prob: float = field(default=0.15, metadata={"help": "P(second finding type in a breast)"})
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

    @property
    def mm_per_pixel(self) -> float:
        """Pixel pitch: the full image height spans a 30 cm detector, as VinDr's 3518 rows do."""
        return 300.0 / self.image_height

    def to_dict(self) -> dict:
        return asdict(self)
