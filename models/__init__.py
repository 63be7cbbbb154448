"""mammo-interp model stack: data, encoders, CLIP models, training.

Importing this package installs the torchvision guard where it is needed and changes nothing else; see
:mod:`models.runtime`.
"""

from models import runtime as _runtime

_runtime.setup()
