"""Cards for the weights the project ships inside its packages (CLIP model, supervised reference,
FActOR mappers): one place that says how a file was made, so every card records the same facts.

A card is JSON next to its file: the exact command, the code commit, the date, and the file's
sha256 and size, plus whatever the caller knows (data, config, metrics). Tests recompute the
sha256 of each packaged file and compare it with its card.
"""

from __future__ import annotations

import datetime
import hashlib
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from models.data import default
from models.data.synth import GENERATOR_VERSION


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_commit() -> str | None:
    """The git commit of the code (``+dirty`` with uncommitted changes to code or recipes; prose and
    the weights being written do not count); None outside a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "*.py", "pyproject.toml", "models/recipes")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(weights: str | Path, module: str) -> dict[str, Any]:
    """The fields every card shares: the command that ran (``python -m MODULE`` and this process's
    arguments, shell-quoted, absolute paths made machine-free), commit, date, and the written file's
    sha256 and size."""
    from models.run_record import portable  # run_record builds on this module
    command = shlex.join(["python", "-m", module, *(portable(argument) for argument in sys.argv[1:])])
    return {"command": command, "commit": code_commit(),
            "created": datetime.date.today().isoformat(), "sha256": sha256(weights),
            "bytes": Path(weights).stat().st_size}


def embedded_data() -> dict[str, Any]:
    """A card's ``data`` for weights made on the embedded default set: its generator config and version."""
    return {"synthetic": default.DEFAULT_SYNTH.to_dict(), "generator_version": GENERATOR_VERSION}
