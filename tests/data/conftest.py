"""Fixtures for the data-layer tests: breast phantoms, DICOM writing, tiny VinDr/RSNA trees."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.uid import generate_uid

from models.data import schema
from models.data.dicom import DicomWriteSpec, write_dicom


def phantom(
    height: int,
    width: int,
    laterality: str = "L",
    boxes: tuple = (),
    label: bool = False,
    level: float = 0.45,
) -> np.ndarray:
    """A float32 breast-like image: a half-ellipse of tissue on the chest-wall side (left for L,
    right for R), background 0, optional integer ``xyxy`` boxes filled with 1.0 and an optional
    bright "burned-in label" block in the anterior top corner, away from the breast."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    depth = x if laterality == "L" else width - x
    inside = (depth / (0.6 * width)) ** 2 + ((y - 0.5 * height) / (0.38 * height)) ** 2 <= 1
    texture = 0.04 * np.sin(x / 3.0) * np.cos(y / 4.0)
    image = np.where(inside, level + texture, 0.0).astype(np.float32)
    for xmin, ymin, xmax, ymax in boxes:
        image[int(ymin) : int(ymax), int(xmin) : int(xmax)] = 1.0
    if label:
        x0, x1 = (int(0.78 * width), int(0.92 * width))
        if laterality == "R":
            x0, x1 = width - x1, width - x0
        image[int(0.04 * height) : int(0.1 * height), x0:x1] = 0.95
    return image


def _write(path: Path, stored: np.ndarray, **spec: object) -> Path:
    fields = dict(
        study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
        laterality="L", view_position="CC",
    )
    fields.update(spec)
    write_dicom(path, stored, DicomWriteSpec(**fields))
    return path


def to_stored(image: np.ndarray, bits: int = 16) -> np.ndarray:
    return np.rint(np.clip(image, 0, 1) * (2**bits - 1)).astype(np.uint16)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows([{c: row.get(c, "") for c in columns} for row in rows])
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


VINDR_HEIGHT, VINDR_WIDTH = 96, 64
# Study "s1" (training): a mass in the left breast seen on both views, one box labelled with two
# categories on L-CC. Study "s2" (test): no findings, no R-MLO image (a missing view).
MASS_LCC = (10.0, 40.0, 22.0, 52.0)
MASS_LMLO = (12.0, 30.0, 24.0, 44.0)
CALC_LCC = (6.5, 60.25, 14.0, 70.0)
FOUR_VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The helpers above: ``phantom``, ``to_stored``, ``write_dicom(path, stored, **spec)`` (fresh
    UIDs by default), ``write_csv(path, columns, rows)``, ``read_csv(path)``, and the boxes of the
    ``vindr_root`` fixture (``mass_lcc``, ``mass_lmlo``, ``calc_lcc``)."""
    return SimpleNamespace(
        phantom=phantom, to_stored=to_stored, write_dicom=_write, write_csv=write_csv, read_csv=read_csv,
        mass_lcc=MASS_LCC, mass_lmlo=MASS_LMLO, calc_lcc=CALC_LCC,
    )


def _vindr_images() -> list[dict]:
    images = []
    for study, split, birads, slots in (
        ("s1", "training", {"L": 4, "R": 1}, FOUR_VIEWS),
        ("s2", "test", {"L": 2, "R": 1}, [s for s in FOUR_VIEWS if s != ("R", "MLO")]),
    ):
        for lat, view in slots:
            images.append({
                "study_id": study, "series_id": f"{study}-{lat}{view}", "image_id": f"{study}-{lat}-{view}",
                "laterality": lat, "view_position": view, "height": VINDR_HEIGHT, "width": VINDR_WIDTH,
                "breast_birads": f"BI-RADS {birads[lat]}", "breast_density": "DENSITY C", "split": split,
            })
    return images


def _vindr_findings(images: list[dict]) -> list[dict]:
    rows = []
    boxed = {
        "s1-L-CC": [("['Mass', 'Suspicious Calcification']", "BI-RADS 4", MASS_LCC),
                    ("['Suspicious Calcification']", "BI-RADS 3", CALC_LCC)],
        "s1-L-MLO": [("['Mass']", "BI-RADS 4", MASS_LMLO)],
    }
    for image in images:
        for categories, birads, box in boxed.get(image["image_id"], [("['No Finding']", "", None)]):
            row = {**image, "finding_categories": categories, "finding_birads": birads}
            if box is not None:
                row.update(zip(schema.BOX_COLUMNS, (f"{v:.2f}" for v in box)))
            rows.append(row)
    return rows


@pytest.fixture
def vindr_root(tmp_path: Path) -> Path:
    """A valid 2-study VinDr tree with real (phantom) DICOMs of 96 x 64 pixels."""
    root = tmp_path / "vindr"
    images = _vindr_images()
    findings = _vindr_findings(images)
    for image in images:
        boxes = [
            tuple(float(r[c]) for c in schema.BOX_COLUMNS)
            for r in findings if r["image_id"] == image["image_id"] and r.get("xmin")
        ]
        pixels = phantom(VINDR_HEIGHT, VINDR_WIDTH, image["laterality"], boxes=boxes)
        path = root / schema.IMAGES_DIR / image["study_id"] / f"{image['image_id']}{schema.DICOM_SUFFIX}"
        _write(path, to_stored(pixels), laterality=image["laterality"], view_position=image["view_position"])
    write_csv(root / schema.BREAST_LEVEL_CSV, schema.BREAST_LEVEL_COLUMNS, images)
    write_csv(root / schema.FINDING_CSV, schema.FINDING_COLUMNS, findings)
    return root


@pytest.fixture
def synthetic_vindr_root(vindr_root: Path) -> Path:
    """``vindr_root`` plus the generator's side tables: lesions (one malignant mass) and reports."""
    lesion = {"study_id": "s1", "lesion_id": "0", "finding_category": "Mass", "mass_shape": "irregular",
              "mass_margin": "spiculated", "finding_birads": "BI-RADS 4", "malignant": "1", "laterality": "L"}
    rows = [
        {**lesion, "image_id": "s1-L-CC", "view_position": "CC", **dict(zip(schema.BOX_COLUMNS, MASS_LCC))},
        {**lesion, "image_id": "s1-L-MLO", "view_position": "MLO", **dict(zip(schema.BOX_COLUMNS, MASS_LMLO))},
        {"study_id": "s1", "image_id": "s1-L-CC", "laterality": "L", "view_position": "CC", "lesion_id": "1",
         "finding_category": "Suspicious Calcification", "finding_birads": "BI-RADS 3", "malignant": "0",
         **dict(zip(schema.BOX_COLUMNS, CALC_LCC))},
    ]
    write_csv(vindr_root / schema.SYNTH_LESIONS_CSV, schema.SYNTH_LESION_COLUMNS, rows)
    reports = [{"study_id": "s1", "report": "Irregular spiculated mass,\nleft breast. BI-RADS 4."},
               {"study_id": "s2", "report": "No suspicious findings. BI-RADS 2."}]
    write_csv(vindr_root / schema.REPORTS_CSV, schema.REPORT_COLUMNS, reports)
    return vindr_root


@pytest.fixture
def rsna_root(tmp_path: Path) -> Path:
    """A valid RSNA tree: patient 10 (4 standard views, cancer on the left), patient 11 (CC + an ML)."""
    root = tmp_path / "rsna"
    rows = []
    for patient, image, lat, view, cancer, birads, density in (
        ("10", "100", "R", "CC", "0", "1", "B"),
        ("10", "101", "L", "CC", "1", "0", "B"),
        ("10", "102", "R", "MLO", "0", "1", "B"),
        ("10", "103", "L", "MLO", "1", "0", "B"),
        ("11", "110", "L", "CC", "0", "", ""),
        ("11", "111", "L", "ML", "0", "", ""),
    ):
        rows.append({"site_id": "1", "patient_id": patient, "image_id": image, "laterality": lat, "view": view,
                     "age": "55.0", "cancer": cancer, "biopsy": cancer, "invasive": cancer, "BIRADS": birads,
                     "implant": "0", "density": density, "machine_id": "49", "difficult_negative_case": "False"})
        pixels = phantom(80, 64, lat)
        _write(root / "train_images" / patient / f"{image}.dcm", to_stored(pixels), laterality=lat,
               view_position=view)
    write_csv(root / "train.csv", schema.RSNA_TRAIN_COLUMNS, rows)
    return root
