"""RSNA Screening Mammography reader: ``train.csv`` to the per-image table.

Images live at ``<root>/train_images/<patient_id>/<image_id>.dcm``. RSNA has no studies, no official
split and no boxes: ``study_id`` is the patient, every row is ``training`` (carve validation/test
splits by patient with :func:`models.data.tables.with_validation_split`), ``malignancy`` is the
``cancer`` column, ``finding_categories`` is None (not annotated) and ``boxes`` empty. Views other
than CC/MLO (ML, LM, LMO, AT) are kept with ``standard_view`` False.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.data import schema
from models.data.labels import parse_binary, parse_density
from models.data.reading import ReadOptions, present_images
from models.data.tables import (
    birads_between,
    check_unique,
    image_table,
    nonempty,
    optional_float,
    read_csv_rows,
    required,
)

RSNA_CSV = "train.csv"
RSNA_IMAGES_DIR = "train_images"
RSNA_SUFFIX = ".dcm"


def read_rsna(root: str | Path, options: ReadOptions = ReadOptions(), check_files: bool = True) -> pd.DataFrame:
    """Read RSNA ``train.csv`` into the per-image table (:data:`IMAGE_COLUMNS`).

    Args:
        root: folder with ``train.csv`` and ``train_images/``.
        options: ``skip_missing_images`` reads a partial download (RSNA has no boxes).
        check_files: look for the DICOMs at all (off: read the table alone).

    Raises:
        TableError: a missing or malformed CSV, column or value (file, line, column, expectation).
    """
    root = Path(root).absolute()
    rows = read_csv_rows(root / RSNA_CSV, schema.RSNA_TRAIN_COLUMNS)
    check_unique(rows, "image_id")
    records = []
    for i in range(len(rows.rows)):
        patient = rows.cell(i, "patient_id", nonempty, "a patient id")
        image = rows.cell(i, "image_id", nonempty, "an image id")
        view = rows.pick(i, "view", schema.RSNA_VIEWS)
        records.append({
            "dataset": "rsna",
            "study_id": patient,
            "series_id": None,
            "image_id": image,
            "path": str(root / RSNA_IMAGES_DIR / patient / f"{image}{RSNA_SUFFIX}"),
            "laterality": rows.pick(i, "laterality", schema.LATERALITIES),
            "view": view,
            "standard_view": view in schema.VIEWS,
            "height": None,
            "width": None,
            "breast_birads": rows.cell(i, "BIRADS", birads_between(0, 5), "0, 1, 2 (..5) or empty"),
            "density": rows.cell(i, "density", parse_density, "A, B, C, D or empty"),
            "split": "training",
            "finding_categories": None,
            "boxes": [],
            "malignancy": float(rows.cell(i, "cancer", required(parse_binary), "0 or 1")),
            "malignancy_source": "cancer",
            "age": rows.cell(i, "age", optional_float, "a number or empty"),
            "report": None,
        })
    if check_files:
        records = [records[i] for i in present_images(rows, [Path(r["path"]) for r in records],
                                                       options.skip_missing_images)]
    return image_table(records)
