"""mammo-interp: feature attribution and interpretability for mammography CLIP models."""

import models as _models  # noqa: F401  (runtime set-up: offline hub, torchvision guard)

__version__ = "0.1.0"
