"""The README's Python API block runs as it stands (slow: it reads the 100-study check set and fits
FActOR's mapper on the shipped model, about 1.5 min)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from readme_blocks import python_block


@pytest.mark.slow
def test_the_readme_python_api_block_runs(tmp_path):
    env = {**os.environ, "MAMMO_INTERP_CACHE": os.environ.get("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))}
    env.pop("MAMMO_INTERP_DATA", None)
    out = subprocess.run([sys.executable, "-c", python_block("## Python API")], capture_output=True, text=True,
                         timeout=900, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["Factor", "GradCam", "ChannelBaseline"]
    for line in lines:
        value, low, high = map(float, re.search(r"IoU-hit@0.25 ([\d.]+) \(([\d.]+)–([\d.]+)\)", line).groups())
        assert 0 <= low <= value <= high <= 1


def test_the_readme_python_api_block_imports_from_mammo_interp_only():
    imports = [line for line in python_block("## Python API").splitlines() if line.startswith(("import", "from"))]
    assert imports and all(line.startswith("from mammo_interp import") for line in imports), imports
