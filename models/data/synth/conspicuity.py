"""How ``difficulty`` (0 easy .. 1 hard) sets each lesion's conspicuity.

Each factor is piecewise linear through its values at difficulty 0, 0.5 and 1. The upper half
(0.5 .. 1) is generator 1.1.0's whole scale: 1.1.0's difficulty ``d`` is 1.2.0's ``(1 + d) / 2``, so
1.1.0's default 0.5 is 0.75 here. The lower half is easier than anything 1.1.0 made: at 1.1.0's
easiest setting a mass in a 256-row image stands a median 1.75 texture standard deviations above its
surroundings, below the brightest normal lump of a typical mass-free image (median 2.3;
``analyses.lesion_contrast``), so even a supervised classifier cannot tell the images apart well. Below 0.5 the
mass contrast rises steeply (over fat as well as over gland) and calcium specks grow until a cluster
survives downsampling to 256 rows. Not physical: a knob for a benchmark a model can learn.
"""

from __future__ import annotations

import numpy as np

KNOTS = (0.0, 0.5, 1.0)
FACTORS: dict[str, tuple[float, float, float]] = {
    # Mass attenuation above gland, as a share of the gland-fat gap (times U(0.7, 1.3) per mass).
    "mass_contrast": (1.85, 0.35, 0.05),
    # Lesion size against the VinDr-calibrated medians.
    "size": (1.45, 1.15, 0.85),
    # Calcium speck diameter against the sampled one (0.1-0.6 mm).
    "speck_diameter": (2.6, 1.3, 0.8),
    # Strength of architectural distortion and retraction strands.
    "strands": (1.8, 1.2, 0.6),
    # Extra gland fraction of an asymmetry.
    "asymmetry": (1.15, 0.75, 0.35),
    # Photons per pixel against 2,500 at 512 rows (quantum noise falls as this rises).
    "photons": (2.2, 1.4, 0.6),
}


def factor(name: str, difficulty: float) -> float:
    """The ``name`` factor of :data:`FACTORS` at ``difficulty`` in [0, 1]."""
    return float(np.interp(difficulty, KNOTS, FACTORS[name]))
