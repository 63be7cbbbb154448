"""mammo-interp model stack: data, encoders, CLIP models, training.

Importing this package first prepares the process (offline hub, torchvision guard); see
:mod:`models.runtime`.
"""

from models import runtime as _runtime

_runtime.setup()
