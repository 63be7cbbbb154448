"""VinDr-Mammo and RSNA table schemas: column names and value vocabularies.

These are the public datasets' own conventions (see ``shared/notes/data-facts.md``), kept in one
place so the synthetic generator writes exactly what the readers expect from real data.
"""

from __future__ import annotations

BREAST_LEVEL_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
METADATA_JSON = "metadata.json"
IMAGES_DIR = "images"
DICOM_SUFFIX = ".dicom"

BREAST_LEVEL_COLUMNS = (
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
    "breast_birads", "breast_density", "split",
)
FINDING_COLUMNS = (
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
    "breast_birads", "breast_density", "finding_categories", "finding_birads",
    "xmin", "ymin", "xmax", "ymax", "split",
)
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")

LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO")
BIRADS = tuple(f"BI-RADS {k}" for k in range(1, 6))
DENSITIES = tuple(f"DENSITY {c}" for c in "ABCD")
SPLITS = ("training", "test")
NO_FINDING = "No Finding"
FINDING_CATEGORIES = (
    "Mass", "Suspicious Calcification", "Focal Asymmetry", "Architectural Distortion",
    "Asymmetry", "Skin Thickening", "Suspicious Lymph Node", "Nipple Retraction",
    "Global Asymmetry", "Skin Retraction",
)

RSNA_TRAIN_COLUMNS = (
    "site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy",
    "invasive", "BIRADS", "implant", "density", "machine_id", "difficult_negative_case",
)
RSNA_VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "AT")

# Files the synthetic generator writes beside the VinDr tables (real VinDr has none of these; the
# readers join them when present). One row per lesion box / per study.
SYNTH_LESIONS_CSV = "synthetic_lesions.csv"
SYNTH_LESION_COLUMNS = (
    "study_id", "image_id", "laterality", "view_position", "lesion_id", "finding_category",
    "mass_shape", "mass_margin", "finding_birads", "malignant", "xmin", "ymin", "xmax", "ymax",
)
REPORTS_CSV = "reports.csv"
REPORT_COLUMNS = ("study_id", "report")
MASS_SHAPES = ("round", "oval", "irregular", "lobulated")
MASS_MARGINS = ("circumscribed", "obscured", "microlobulated", "ill-defined", "spiculated")
