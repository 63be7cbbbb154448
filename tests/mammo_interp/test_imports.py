"""The library modules stay light: importing them (and every built-in method) draws no figure code."""

from __future__ import annotations

import subprocess
import sys

LIBRARY = ("mammo_interp", "mammo_interp.methods", "mammo_interp.methods.channels", "mammo_interp.methods.cams",
           "mammo_interp.methods.gradients", "mammo_interp.methods.occlusion", "mammo_interp.methods.prior",
           "mammo_interp.heatmaps", "mammo_interp.attribution", "mammo_interp.per_view", "mammo_interp.boxes",
           "mammo_interp.metrics")  # captum and pytorch-grad-cam import pyplot themselves: on a method's first use


def test_library_and_method_modules_do_not_import_pyplot():
    code = (f"import importlib, sys\nfor name in {LIBRARY!r}:\n    importlib.import_module(name)\n"
            "from mammo_interp import methods\nmethods.available()\nimport mammo_interp\n"
            "mammo_interp.PerViewSaliency, mammo_interp.Attribution\n"
            "print(sorted(m for m in sys.modules if m.startswith('matplotlib.pyplot')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
