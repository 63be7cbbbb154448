"""On-disk cache of preprocessed images, so a DICOM is decoded and cropped once, not every epoch.

An entry is keyed by a hash of (absolute path, file size, mtime, laterality, preprocessing config,
cache format version): editing or replacing a DICOM, or changing any preprocessing setting, makes a
new key, never a stale hit. Each entry is a 16-bit grayscale PNG (``round(image * 65535)``) plus a
JSON sidecar with the :class:`GeometricTransform`. Both are written to a temporary file in the same
folder and renamed with :func:`os.replace`, the sidecar last, so readers (other DataLoader workers,
a crashed run) see a whole entry or none. An unreadable or inconsistent entry is rebuilt.

Cached images are quantized to 16 bits (steps of 1/65535); a miss returns the same quantized array a
later hit does, so results never depend on whether the cache was warm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from models.data.preprocess import GeometricTransform, PreprocessConfig, load_preprocessed
from models.io import atomic_write

CACHE_VERSION = 1
_LEVELS = 65535
logger = logging.getLogger(__name__)


def _quantize(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * _LEVELS).astype(np.uint16)


class PreprocessCache:
    """Preprocessed images on disk under ``root``, for one :class:`PreprocessConfig`.

    Args:
        root: cache folder (created on first write); one folder can hold several configs.
        config: the preprocessing every entry of this cache object uses.

    Attributes:
        hits, misses: counts since construction (diagnostics; not persisted).
    """

    def __init__(self, root: str | Path, config: PreprocessConfig) -> None:
        self.root = Path(root)
        self.config = config
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path, laterality: str | None = None) -> str:
        """Hex key of ``path``'s entry; stats the file, so a changed file gets a new key.

        Raises:
            FileNotFoundError: ``path`` does not exist.
        """
        path = Path(path).absolute()
        stat = path.stat()
        identity = {
            "version": CACHE_VERSION,
            "path": str(path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "laterality": laterality,
            "config": self.config.to_dict(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def entry_paths(self, key: str) -> tuple[Path, Path]:
        """``(png, json)`` paths of an entry."""
        folder = self.root / key[:2]
        return folder / f"{key}.png", folder / f"{key}.json"

    def get(
        self, path: str | Path, laterality: str | None = None
    ) -> tuple[np.ndarray, GeometricTransform]:
        """The preprocessed image (float32 ``config.size`` in [0, 1]) and its transform.

        Raises:
            DicomError: on a miss, when the DICOM cannot be read.
        """
        key, png, sidecar = self._entry(path, laterality)
        cached = self._load(key, png, sidecar)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        image, transform = load_preprocessed(path, self.config, laterality)
        stored = _quantize(image)
        png.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(png, lambda stream: Image.fromarray(stored).save(stream, format="PNG"))
        meta = {"key": key, "source": str(Path(path).absolute()), "transform": transform.to_dict()}
        atomic_write(sidecar, lambda stream: stream.write(json.dumps(meta).encode()))
        return stored.astype(np.float32) / _LEVELS, transform

    def fill(self, images: Iterable[tuple[str | Path, str | None]], workers: int | None = None,
             progress: bool = True) -> int:
        """Preprocess every ``(path, laterality)`` not cached yet, in ``workers`` processes (default:
        all cores), so a first training epoch does not decode DICOMs one by one. Returns how many
        entries were built. An entry counts as present when its files exist (a corrupt one is still
        rebuilt by :meth:`get`); entries are written atomically, so concurrent fills are safe."""
        todo = [(str(p), lat) for p, lat in images if not all(path.is_file() for path in self._entry(p, lat)[1:])]
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        if not todo:
            return 0
        if workers == 1:
            for path, laterality in tqdm(todo, desc="preprocess", disable=not progress, leave=False):
                self.get(path, laterality)
            return len(todo)
        # spawn, not fork: a fork after torch has started its OpenMP threads can deadlock the workers
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = pool.map(_fill_one, [(self.root, self.config, p, lat) for p, lat in todo], chunksize=8)
            for _ in tqdm(jobs, total=len(todo), desc="preprocess", disable=not progress, leave=False):
                pass
        return len(todo)

    def _entry(self, path: str | Path, laterality: str | None) -> tuple[str, Path, Path]:
        key = self.key(path, laterality)
        return (key, *self.entry_paths(key))

    def _load(
        self, key: str, png: Path, sidecar: Path
    ) -> tuple[np.ndarray, GeometricTransform] | None:
        if not sidecar.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text())
            if meta["key"] != key:
                raise ValueError("sidecar of another key")
            transform = GeometricTransform.from_dict(meta["transform"])
            with Image.open(png) as handle:
                stored = np.asarray(handle)
            if stored.dtype != np.uint16 or stored.shape != tuple(self.config.size):
                raise ValueError(f"image {stored.dtype} {stored.shape}")
        except (OSError, ValueError, KeyError, TypeError, SyntaxError) as exc:
            logger.warning("rebuilding corrupt cache entry %s: %s", sidecar, exc)
            return None
        return stored.astype(np.float32) / _LEVELS, transform


def _fill_one(job: tuple[Path, PreprocessConfig, str, str | None]) -> None:
    root, config, path, laterality = job
    PreprocessCache(root, config).get(path, laterality)
