"""VinDr-Mammo reader: the two annotation CSVs (plus optional synthetic side tables) to one table.

Layout under ``root``: ``breast-level_annotations.csv`` (one row per image),
``finding_annotations.csv`` (one row per box, or one ``['No Finding']`` row per image), images at
``images/<study_id>/<image_id>.dicom``. When the synthetic generator's ``synthetic_lesions.csv`` and
``reports.csv`` are present, per-lesion malignancy and mass descriptors and the study report are
joined. Real VinDr has neither (no pathology, no reports): malignancy is then a BI-RADS proxy
(:func:`models.data.labels.malignancy_from_birads`) and ``report`` is None.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pandas as pd

from models.data import schema
from models.data.errors import TableError
from models.data.labels import malignancy_from_birads, parse_binary, parse_density
from models.data.reading import EdgeBoxes, ReadOptions, present_images
from models.data.tables import (
    BOX_TOLERANCE_PX,
    Box,
    CsvRows,
    birads_between,
    check_box,
    check_unique,
    image_table,
    nonempty,
    positive_int,
    read_csv_rows,
    required,
)

_CATEGORY_VOCABULARY = (*schema.FINDING_CATEGORIES, schema.NO_FINDING)


def parse_categories(value: str) -> list[str]:
    """``"['Mass', 'Suspicious Calcification']"`` to a list; ``['No Finding']`` stays as is.

    Raises:
        ValueError: not a Python list literal of known category names, empty, or ``No Finding``
            mixed with findings.
    """
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise ValueError("not a Python list literal") from exc
    if not isinstance(parsed, (list, tuple)) or not parsed:
        raise ValueError("not a non-empty list")
    unknown = [c for c in parsed if not isinstance(c, str) or c not in _CATEGORY_VOCABULARY]
    if unknown:
        raise ValueError(f"unknown categories {unknown}")
    if schema.NO_FINDING in parsed and len(parsed) > 1:
        raise ValueError(f"{schema.NO_FINDING!r} together with findings")
    return list(parsed)


def _box_cells(rows: CsvRows, index: int, columns: tuple[str, ...]) -> tuple[float, ...] | None:
    """The four box floats, or None when all four are empty (a no-finding row)."""
    values = [rows.rows[index][c] for c in columns]
    if not any(values):
        return None
    expected = "four finite floats, or all four empty"
    if not all(values):
        empty = [c for c, v in zip(columns, values) if not v]
        problem = f"box partly empty: {dict(zip(columns, values))}"
        raise TableError(rows.where(index, empty[0]), problem, expected)
    box = tuple(rows.cell(index, c, float, expected) for c in columns)
    if not all(math.isfinite(v) for v in box):
        raise TableError(rows.where(index), f"non-finite box {box}", expected)
    return box


def _image_record(rows: CsvRows, index: int, root: Path) -> dict[str, Any]:
    study = rows.cell(index, "study_id", nonempty, "a study id")
    image = rows.cell(index, "image_id", nonempty, "an image id")
    birads = rows.cell(
        index, "breast_birads", required(birads_between(1, 5)), "'BI-RADS 1' .. 'BI-RADS 5'"
    )
    return {
        "dataset": "vindr",
        "study_id": study,
        "series_id": rows.cell(index, "series_id", nonempty, "a series id"),
        "image_id": image,
        "path": str(root / schema.IMAGES_DIR / study / f"{image}{schema.DICOM_SUFFIX}"),
        "laterality": rows.pick(index, "laterality", schema.LATERALITIES),
        "view": rows.pick(index, "view_position", schema.VIEWS),
        "standard_view": True,
        "height": rows.cell(index, "height", positive_int, "a positive integer"),
        "width": rows.cell(index, "width", positive_int, "a positive integer"),
        "breast_birads": birads,
        "density": rows.cell(
            index, "breast_density", required(parse_density), "'DENSITY A' .. 'DENSITY D'"
        ),
        "split": rows.pick(index, "split", schema.SPLITS),
        "finding_categories": [],
        "boxes": [],
        "malignancy": malignancy_from_birads(birads),
        "malignancy_source": "birads_proxy",
        "age": math.nan,
        "report": None,
    }


def _lookup_image(rows: CsvRows, index: int, images: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The breast-level record of this row's image, checking the columns both tables repeat."""
    image_id = rows.rows[index]["image_id"]
    record = images.get(image_id)
    if record is None:
        raise TableError(
            rows.where(index, "image_id"),
            f"image_id {image_id!r} is not in {schema.BREAST_LEVEL_CSV}",
            f"every image listed in {schema.BREAST_LEVEL_CSV}",
        )
    repeated = {"study_id": "study_id", "laterality": "laterality", "view_position": "view",
                "height": "height", "width": "width"}
    for column, key in repeated.items():
        if column not in rows.columns:
            continue
        value = rows.rows[index][column]
        if column in ("height", "width"):
            value = rows.cell(index, column, positive_int, "a positive integer")
        if value != record[key]:
            raise TableError(
                rows.where(index, column),
                f"{value!r} disagrees with {schema.BREAST_LEVEL_CSV} ({record[key]!r})",
                "the same value in both tables",
            )
    return record


def _add_findings(rows: CsvRows, index: int, images: dict[str, dict[str, Any]], edges: EdgeBoxes) -> None:
    record = _lookup_image(rows, index, images)
    categories = rows.cell(
        index, "finding_categories", parse_categories,
        f"a Python list of names from {list(_CATEGORY_VOCABULARY)}",
    )
    birads = rows.cell(
        index, "finding_birads", birads_between(1, 5), "'BI-RADS 1' .. 'BI-RADS 5' or empty"
    )
    box = _box_cells(rows, index, schema.BOX_COLUMNS)
    if categories == [schema.NO_FINDING]:
        if box is not None:
            where = rows.where(index, "xmin")
            raise TableError(where, f"a box on a {schema.NO_FINDING!r} row", "empty box columns")
        return
    if box is not None:
        check_box(rows, index, box)
        box = edges.fit(index, box, record["height"], record["width"])
    for category in categories:
        if category not in record["finding_categories"]:
            record["finding_categories"].append(category)
        if box is not None:
            record["boxes"].append(Box(*box, category=category, birads=birads))


def _join_lesions(rows: CsvRows, images: dict[str, dict[str, Any]], policy: str) -> None:
    """Attach mass shape/margin and malignancy to matching boxes; set per-breast malignancy.

    Lesion boxes pass the same edge policy as the finding boxes they match (a dropped box's lesion
    still sets its breast's malignancy)."""
    edges = EdgeBoxes(rows, policy)
    malignant_breasts = set()
    for index in range(len(rows.rows)):
        record = _lookup_image(rows, index, images)
        category = rows.pick(index, "finding_category", schema.FINDING_CATEGORIES)
        shape = rows.pick(index, "mass_shape", schema.MASS_SHAPES, allow_empty=True)
        margin = rows.pick(index, "mass_margin", schema.MASS_MARGINS, allow_empty=True)
        malignant = rows.cell(index, "malignant", required(parse_binary), "0 or 1")
        box = _box_cells(rows, index, schema.BOX_COLUMNS)
        if box is None:
            raise TableError(rows.where(index, "xmin"), "lesion without a box", "four box floats")
        if malignant:
            malignant_breasts.add((record["study_id"], record["laterality"]))
        box = edges.fit(index, box, record["height"], record["width"])
        if box is None:
            continue
        match = next(
            (
                k for k, b in enumerate(record["boxes"])
                if b.category == category and b.malignant is None
                and max(abs(u - v) for u, v in zip(b[:4], box)) <= BOX_TOLERANCE_PX
            ),
            None,
        )
        if match is None:
            raise TableError(
                rows.where(index),
                f"no {category!r} box {box} on image {record['image_id']!r}"
                f" in {schema.FINDING_CSV}",
                f"each lesion to match a finding box within {BOX_TOLERANCE_PX:g} px",
            )
        record["boxes"][match] = record["boxes"][match]._replace(
            mass_shape=shape or None, mass_margin=margin or None, malignant=bool(malignant)
        )
    for record in images.values():
        breast = (record["study_id"], record["laterality"])
        record["malignancy"] = float(breast in malignant_breasts)
        record["malignancy_source"] = "lesions"


def _join_reports(rows: CsvRows, images: dict[str, dict[str, Any]]) -> None:
    check_unique(rows, "study_id")
    studies: dict[str, list[dict[str, Any]]] = {}
    for record in images.values():
        studies.setdefault(record["study_id"], []).append(record)
    for index, row in enumerate(rows.rows):
        if row["study_id"] not in studies:
            raise TableError(
                rows.where(index, "study_id"),
                f"study {row['study_id']!r} is not in {schema.BREAST_LEVEL_CSV}",
                "a report only for listed studies",
            )
        for record in studies[row["study_id"]]:
            record["report"] = row["report"]


def read_vindr(root: str | Path, options: ReadOptions = ReadOptions(), check_files: bool = True) -> pd.DataFrame:
    """Read a VinDr-Mammo style dataset into the per-image table (:data:`IMAGE_COLUMNS`).

    Args:
        root: folder with the annotation CSVs and ``images/``.
        options: what to do with boxes past the image edge and with listed images missing on disk
            (:class:`models.data.reading.ReadOptions`; each repair is counted in a warning).
        check_files: look for the DICOMs at all (off: read the tables alone).

    Returns:
        One row per image of ``breast-level_annotations.csv`` (found on disk, with
        ``options.skip_missing_images``), in its order.

    Raises:
        TableError: a missing or malformed CSV, column or value; the message names the file, line
            and column and what was expected.
    """
    root = Path(root).absolute()
    breast = read_csv_rows(root / schema.BREAST_LEVEL_CSV, schema.BREAST_LEVEL_COLUMNS)
    check_unique(breast, "image_id")
    records = [_image_record(breast, i, root) for i in range(len(breast.rows))]
    images = {r["image_id"]: r for r in records}

    findings = read_csv_rows(root / schema.FINDING_CSV, schema.FINDING_COLUMNS)
    edges = EdgeBoxes(findings, options.box_policy)
    for index in range(len(findings.rows)):
        _add_findings(findings, index, images, edges)
    edges.warn()
    order = {c: k for k, c in enumerate(schema.FINDING_CATEGORIES)}
    for record in records:
        record["finding_categories"].sort(key=order.__getitem__)

    lesions, reports = root / schema.SYNTH_LESIONS_CSV, root / schema.REPORTS_CSV
    if lesions.is_file():
        _join_lesions(read_csv_rows(lesions, schema.SYNTH_LESION_COLUMNS), images, options.box_policy)
    if reports.is_file():
        _join_reports(read_csv_rows(reports, schema.REPORT_COLUMNS), images)
    if check_files:
        records = [records[i] for i in present_images(breast, [Path(r["path"]) for r in records],
                                                       options.skip_missing_images)]
    return image_table(records)
