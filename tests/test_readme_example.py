"""The README's Python API block and the longer one of docs/python-api.md run as they stand (slow: they read
the 100-study check set; the longer one fits FActOR's mapper on the shipped model, about 1.5 min)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from readme_blocks import python_block

ESTIMATE = r"([\d.]+) \(([\d.]+)–([\d.]+)\)"
PAGES = ("README.md", "docs/python-api.md")


def run_block(page: str, tmp_path) -> list[str]:
    env = {**os.environ, "MAMMO_INTERP_CACHE": os.environ.get("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))}
    env.pop("MAMMO_INTERP_DATA", None)
    out = subprocess.run([sys.executable, "-c", python_block("## Python API", page)], capture_output=True, text=True,
                         timeout=900, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


def assert_estimate(text: str) -> None:
    value, low, high = map(float, re.search(ESTIMATE, text).groups())
    assert 0 <= low <= value <= high <= 1


@pytest.mark.slow
def test_the_readme_python_api_block_runs(tmp_path):
    [line] = run_block("README.md", tmp_path)
    assert_estimate(line)


@pytest.mark.slow
def test_the_python_api_page_block_runs(tmp_path):
    lines = run_block("docs/python-api.md", tmp_path)
    assert [line.split()[0] for line in lines] == ["Factor", "GradCam", "ChannelBaseline"]
    for line in lines:
        assert_estimate(line.split("IoU-hit@0.25", 1)[1])


@pytest.mark.parametrize("page", PAGES)
def test_the_python_api_blocks_import_from_mammo_interp_only(page):
    imports = [line for line in python_block("## Python API", page).splitlines()
               if line.startswith(("import", "from"))]
    assert imports and all(line.startswith("from mammo_interp import") for line in imports), imports


def test_the_readme_python_api_block_is_at_most_12_lines():
    assert len(python_block("## Python API").strip().splitlines()) <= 12
