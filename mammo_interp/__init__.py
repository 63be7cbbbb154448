"""mammo-interp: feature attribution and interpretability for mammography CLIP models."""

import models as _models  # noqa: F401  (torchvision guard before timm; nothing else is changed)

__version__ = "0.1.0"
