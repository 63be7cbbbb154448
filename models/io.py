"""Crash-safe file writing: a file is either its old self or complete, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then rename it over ``path``.

    The parent folder is created. On any error the temporary file is removed and ``path`` is left as
    it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for recorder in _recorders:
        recorder.append(path)
    return path


_recorders: list[list[Path]] = []


@contextlib.contextmanager
def recording_writes() -> Iterator[list[Path]]:
    """Collect the path of every file :func:`atomic_write` writes inside the block (an entry point
    says what it wrote at the end)."""
    paths: list[Path] = []
    _recorders.append(paths)
    try:
        yield paths
    finally:
        _recorders.remove(paths)


def moved(source: Path, target: Path) -> None:
    """Files recorded inside ``source`` now live inside ``target`` (a staged folder renamed into place),
    so the command's "wrote" lines name where they are."""
    for recorder in _recorders:
        recorder[:] = [target / path.relative_to(source) if path.is_relative_to(source) else path
                       for path in recorder]


def save_json(path: str | Path, values: dict[str, Any]) -> Path:
    """Write ``values`` as indented JSON, atomically."""
    return atomic_write(path, lambda s: s.write(json.dumps(values, indent=2, default=str).encode()))


def save_torch(path: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save(payload)`` atomically (checkpoints survive a crash mid-write)."""
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def writable_dir(path: str | Path, flag: str = "output folder") -> Path:
    """Create ``path`` if needed and check a file can be written in it, before any long job starts.

    Raises:
        OSError: the folder cannot be created or written; the message names ``flag`` and the path.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OSError(f"{flag} {path} is not a writable folder ({exc.strerror or exc})") from exc
    return path
