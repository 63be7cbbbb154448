"""mammo-interp model stack: data, encoders, CLIP models, training.

Importing this package installs the torchvision guard where it is needed (:mod:`models.runtime`) and
changes nothing else; in a process started as one of the project's commands on a busy machine it
first makes OpenMP's waiting threads sleep after a short spin, so jobs sharing cores share them fairly
(:mod:`models.cpu_sharing`).
"""

from models import cpu_sharing as _cpu_sharing

_cpu_sharing.share_cores_fairly()  # before torch loads OpenMP

from models import runtime as _runtime  # noqa: E402

_runtime.setup()
