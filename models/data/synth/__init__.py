"""Procedural synthetic screening mammograms in the exact VinDr-Mammo layout, with exact boxes.

``python -m models.data.synth --out DIR --n-studies N --seed S`` writes a dataset; see
:func:`generate_dataset` and :class:`SynthConfig`.
"""

from models.data.synth.config import GENERATOR_VERSION, SynthConfig
from models.data.synth.writer import generate_dataset, study_plan

__all__ = ["GENERATOR_VERSION", "SynthConfig", "generate_dataset", "study_plan"]
