"""The distribution's sibling packages, ``models`` and ``analyses``, are the ones Python finds.

mammo-interp installs three top-level packages. A researcher's own project often has a ``models/`` (or
``analyses/``) folder; run from there, Python finds that one first and ``mammo_interp`` would fail deep
inside with an unrelated ImportError. :func:`check_sibling_packages` runs before anything is imported from
them and says what shadows what, and the fix, in one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SIBLINGS = ("models", "analyses")


def shadowing(name: str, root: Path) -> Path | None:
    """Where Python finds package ``name`` when that is not ``root / name`` (None when it is ours or missing)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    found = Path(next(iter(spec.submodule_search_locations or []), spec.origin or "")).resolve()
    return None if found == (root / name).resolve() else found


def check_sibling_packages() -> None:
    """Raise ImportError naming the first package that shadows one of :data:`SIBLINGS`, and the fix."""
    root = Path(__file__).resolve().parent.parent
    for name in SIBLINGS:
        found = shadowing(name, root)
        if found is not None:
            raise ImportError(
                f"another package named {name!r} ({found}) shadows mammo-interp's ({root / name}): run from a "
                f"directory that does not contain it, or rename it")
