"""Writing a synthetic dataset in the VinDr-Mammo layout.

``DIR/images/<study_id>/<image_id>.dicom``, ``breast-level_annotations.csv``,
``finding_annotations.csv`` (VinDr's exact columns), plus ``synthetic_lesions.csv`` (shape, margin,
malignancy per box), ``reports.csv`` and ``metadata.json``. Every study draws from its own seeded
stream, so the output is identical for a seed whatever the number of worker processes, and the
dataset is written under a temporary name and renamed at the end: an interrupted run leaves nothing
that looks complete. For the same reason any subset of a dataset's studies can be written on its own
(``studies=``), byte for byte as in the whole dataset: an evaluation needs only its splits' studies.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.data import schema
from models.data.dicom import DicomWriteSpec, write_dicom
from models.data.synth.anatomy import BreastShape
from models.data.synth.config import GENERATOR_VERSION, SynthConfig
from models.data.synth.findings import sample_study
from models.data.synth.render import render_view
from models.io import moved

VIEW_ORDER = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs


def _hex_id(rng: np.random.Generator) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))


def _uid(hex_id: str) -> str:
    """A DICOM UID derived from a 32-hex identifier (deterministic for a seed)."""
    return UID_ROOT + str(int.from_bytes(bytes.fromhex(hex_id[:16]), "big"))


def _image_size(rng: np.random.Generator, height: int) -> tuple[int, int]:
    """Two detector formats, as in VinDr: 3518 x 2800 (most) and 2812 x 2012, same pixel pitch."""
    if rng.random() < 0.8:
        return height, int(round(height * 2800 / 3518))
    return int(round(height * 2812 / 3518)), int(round(height * 2012 / 3518))


def _identity_stream(config: SynthConfig, index: int) -> tuple[np.random.Generator, str]:
    """Study ``index``'s identity stream and its study id, the stream's first draw."""
    rng = np.random.default_rng([config.seed, index, 7])
    return rng, _hex_id(rng)


def generate_study(index: int, config: SynthConfig, split: str,
                   image_dir: Path) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Render and write one study; return its breast-level, finding and lesion rows, and its report."""
    root = (config.seed, index)
    rng, study_id = _identity_stream(config, index)
    study = sample_study(np.random.default_rng([*root, 1]), index, config)
    height, width = _image_size(rng, config.image_height)
    photometric = "MONOCHROME1" if rng.random() < config.monochrome1_fraction else "MONOCHROME2"
    compression = "jpeg2000" if rng.random() < config.jpeg2000_fraction else "none"
    shapes = {side: BreastShape.sample(np.random.default_rng([*root, 2, ord(side)]), study.density)
              for side in ("R", "L")}
    breast_rows, finding_rows, lesion_rows = [], [], []
    study_uid = _uid(study_id)
    for side, view in VIEW_ORDER:
        breast = study.breasts[side]
        image_id = _hex_id(rng)
        series_id = _hex_id(rng)
        rendered = render_view(breast, shapes[side], view, height, width, config.mm_per_pixel,
                               config.difficulty, (*root, 3, ord(side)))
        stored = rendered.stored
        if photometric == "MONOCHROME1":
            stored = (2**rendered.bits_stored - 1 - stored.astype(np.int64)).astype(np.uint16)
        window = rendered.window
        if photometric == "MONOCHROME1":
            window = (2**rendered.bits_stored - 1 - window[0], window[1])
        spec = DicomWriteSpec(
            study_uid=study_uid,
            series_uid=_uid(series_id),
            sop_uid=_uid(image_id),
            laterality=side, view_position=view, photometric=photometric, compression=compression,
            window=window if rng.random() < config.window_tag_fraction else None,
            bits_stored=rendered.bits_stored,
        )
        write_dicom(image_dir / study_id / f"{image_id}{schema.DICOM_SUFFIX}", stored, spec)
        common = dict(study_id=study_id, series_id=series_id, image_id=image_id, laterality=side,
                      view_position=view, height=height, width=width,
                      breast_birads=f"BI-RADS {breast.birads}", breast_density=f"DENSITY {study.density}")
        breast_rows.append({**common, "split": split})
        if not rendered.boxes:
            finding_rows.append({**common, "finding_categories": str([schema.NO_FINDING]), "finding_birads": "",
                                 "xmin": np.nan, "ymin": np.nan, "xmax": np.nan, "ymax": np.nan, "split": split})
        for lesion, box in rendered.boxes:
            xyxy = dict(zip(schema.BOX_COLUMNS, (round(v, 2) for v in box)))
            birads = f"BI-RADS {lesion.birads}" if lesion.birads_recorded else ""
            finding_rows.append({**common, "finding_categories": str(lesion.categories),
                                 "finding_birads": birads, **xyxy, "split": split})
            for category in lesion.categories:  # one lesion row per category its box names
                mass = category == "Mass"
                lesion_rows.append(dict(
                    study_id=study_id, image_id=image_id, laterality=side, view_position=view,
                    lesion_id=lesion.lesion_id, finding_category=category, mass_shape=lesion.shape if mass else "",
                    mass_margin=lesion.margin if mass else "", finding_birads=birads,
                    malignant=int(lesion.malignant), **xyxy))
    return breast_rows, finding_rows, lesion_rows, {"study_id": study_id, "report": study.report}


def _job(args):
    return generate_study(*args)


def _splits(config: SynthConfig) -> list[str]:
    rng = np.random.default_rng([config.seed, 0xC0FFEE])
    n_test = int(round(config.n_studies * config.test_fraction))
    test = set(rng.permutation(config.n_studies)[:n_test].tolist())
    return ["test" if i in test else "training" for i in range(config.n_studies)]


def study_plan(config: SynthConfig) -> pd.DataFrame:
    """``index``, ``study_id`` and ``split`` of every study of ``config``'s dataset, without rendering
    anything (milliseconds for thousands of studies)."""
    return pd.DataFrame([{"index": i, "study_id": _identity_stream(config, i)[1], "split": split}
                         for i, split in enumerate(_splits(config))])


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.2f")


def generate_dataset(out: str | Path, config: SynthConfig = SynthConfig(), workers: int | None = None,
                     overwrite: bool = False, progress: bool = True,
                     studies: Collection[int] | None = None) -> Path:
    """Generate a synthetic dataset into ``out``; returns ``out``. ``studies``: write only these study
    indices (of :func:`study_plan`), each exactly as in the whole dataset; default all.

    Raises:
        FileExistsError: ``out`` exists and is not empty, unless ``overwrite``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    started = time.perf_counter()
    try:
        image_dir = staging / schema.IMAGES_DIR
        wanted = None if studies is None else set(studies)
        jobs = [(i, config, split, image_dir) for i, split in enumerate(_splits(config))
                if wanted is None or i in wanted]
        workers = workers or min(len(jobs), os.cpu_count() or 1)
        bar = tqdm(total=len(jobs), desc="synthesizing studies", unit="study", disable=not progress)
        if workers > 1:
            with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
                results = []
                for result in pool.imap(_job, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                    results.append(result)
                    bar.update()
        else:
            results = []
            for job in jobs:
                results.append(_job(job))
                bar.update()
        bar.close()
        breast = pd.DataFrame([r for res in results for r in res[0]], columns=schema.BREAST_LEVEL_COLUMNS)
        finding = pd.DataFrame([r for res in results for r in res[1]], columns=schema.FINDING_COLUMNS)
        lesions = pd.DataFrame([r for res in results for r in res[2]], columns=schema.SYNTH_LESION_COLUMNS)
        reports = pd.DataFrame([res[3] for res in results], columns=schema.REPORT_COLUMNS)
        _write_csv(breast, staging / schema.BREAST_LEVEL_CSV)
        _write_csv(finding, staging / schema.FINDING_CSV)
        _write_csv(lesions, staging / schema.SYNTH_LESIONS_CSV)
        _write_csv(reports, staging / schema.REPORTS_CSV)
        metadata = {
            "generator": "models.data.synth",
            "generator_version": GENERATOR_VERSION,
            "seed": config.seed,
            "config": config.to_dict(),
            **({"studies": sorted(int(i) for i in studies)} if studies is not None else {}),
            "n_images": len(breast),
            "n_boxes": int(finding["xmin"].notna().sum()),
            "seconds": round(time.perf_counter() - started, 2),
            "workers": workers,
        }
        (staging / schema.METADATA_JSON).write_text(json.dumps(metadata, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        moved(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
