"""mammo-interp: feature attribution and interpretability for mammography CLIP models.

The public Python API (:data:`__all__`) is imported on first use, so ``import mammo_interp`` stays
light and changes nothing in the process (the torchvision guard aside, which ``models`` installs); it
fails at once, naming the folder, when another ``models`` or ``analyses`` package shadows this one's.
"""

import importlib

from mammo_interp.shadowing import check_sibling_packages

check_sibling_packages()  # a user's own models/ or analyses/ folder would otherwise fail deep inside

import models as _models  # noqa: E402, F401  (torchvision guard before timm; nothing else is changed)

__version__ = "0.1.0"

_PUBLIC = {
    "Attribution": "mammo_interp.attribution",
    "Factor": "mammo_interp.attribution",
    "GradCam": "mammo_interp.attribution",
    "IntegratedGradients": "mammo_interp.attribution",
    "ChannelBaseline": "mammo_interp.attribution",
    "BreastPrior": "mammo_interp.attribution",
    "LayerFeatures": "mammo_interp.attribution",
    "breast_masks": "mammo_interp.attribution",
    "PerViewSaliency": "mammo_interp.per_view",
    "BoxRule": "mammo_interp.boxes",
    "box_metrics": "mammo_interp.metrics",
    "perturbation_curves": "mammo_interp.faithfulness",
    "cascading_randomization": "mammo_interp.sanity",
    "randomization_verdict": "mammo_interp.sanity",
    "MapperConfig": "mammo_interp.mapper",
    "attribute_embedding": "models.clip",
    "load_clip": "models.checkpoints",
    "shipped_weights": "models.default_model",
    "load_splits": "models.data.sources",
    "check_set_splits": "models.data.check_set",
    "split_tensors": "models.data.tensors",
    "ImageEmbedding": "mammo_interp.adapters",
    "vit_layer": "mammo_interp.adapters",
    "TokenMaps": "models.encoders.tokens",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mammo_interp' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
