"""The difficulty scale of generator 1.2.0: its upper half is 1.1.0's whole scale, and every
conspicuity factor falls as the difficulty rises."""

import numpy as np
import pytest

from models.data.synth.conspicuity import FACTORS, factor

# Generator 1.1.0's factors as it wrote them, linear in its own difficulty d in [0, 1].
GENERATOR_1_1_0 = {
    "mass_contrast": lambda d: 0.35 - 0.3 * d,
    "size": lambda d: 1.15 - 0.3 * d,
    "speck_diameter": lambda d: 1.3 - 0.5 * d,
    "strands": lambda d: 1.2 - 0.6 * d,
    "asymmetry": lambda d: 0.75 - 0.4 * d,
    "photons": lambda d: 1.4 - 0.8 * d,
}


@pytest.mark.parametrize("name", sorted(FACTORS))
def test_upper_half_is_generator_1_1_0(name):
    for old in np.linspace(0, 1, 11):
        assert factor(name, (1 + old) / 2) == pytest.approx(GENERATOR_1_1_0[name](old), abs=1e-12)


@pytest.mark.parametrize("name", sorted(FACTORS))
def test_every_factor_falls_with_difficulty(name):
    values = [factor(name, d) for d in np.linspace(0, 1, 21)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert set(FACTORS) == set(GENERATOR_1_1_0)
