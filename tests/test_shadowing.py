"""A user's own ``models/`` or ``analyses/`` folder in the working directory: ``import mammo_interp`` fails
at once with one line naming it and the fix, instead of an ImportError deep inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mammo_interp
from mammo_interp.shadowing import shadowing

ROOT = Path(mammo_interp.__file__).resolve().parents[1]


def _import_from(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import mammo_interp"], cwd=folder, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name, regular", [("models", True), ("analyses", False)])
def test_a_shadowing_folder_is_named_with_the_fix(tmp_path, name, regular):
    (tmp_path / name).mkdir()
    if regular:
        (tmp_path / name / "__init__.py").write_text("")
    result = _import_from(tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: another package named {name!r} ({tmp_path.resolve() / name}) shadows "
                    f"mammo-interp's ({ROOT / name}): run from a directory that does not contain it, or rename it")


def test_nothing_is_reported_where_no_package_shadows(tmp_path):
    assert _import_from(tmp_path).returncode == 0
    assert shadowing("models", ROOT) is None and shadowing("analyses", ROOT) is None
    assert shadowing("models", tmp_path) == ROOT / "models"
