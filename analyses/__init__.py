"""Studies that compose ``models`` and ``mammo_interp`` and write ``reports/``.

``models`` is imported first so that its launch-time set-up (:mod:`models.cpu_sharing`, the
torchvision guard) precedes torch in every ``python -m analyses.X``.
"""

import models as _models  # noqa: F401
