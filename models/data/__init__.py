"""Mammography data layer: DICOM I/O, table readers, labels, preprocessing, cache, datasets.

Conventions used throughout: images are float32 in [0, 1] with bright = dense; boxes are float
pixel ``xyxy`` with exclusive ``xmax``/``ymax`` edges; laterality ``L``/``R`` and views
``CC``/``MLO`` as in VinDr. See each module's docstring for the details.
"""

from models.data.cache import PreprocessCache
from models.data.datasets import (
    BREAST_VIEWS,
    EXAM_VIEWS,
    BreastDataset,
    ExamDataset,
    ImageDataset,
    collate,
)
from models.data.dicom import DicomImage, DicomWriteSpec, read_dicom, write_dicom
from models.data.errors import DataError, DicomError, TableError
from models.data.labels import (
    BIRADS3,
    BIRADS5,
    DEFAULT_LABELS,
    DENSITY,
    FINDINGS,
    IGNORE_INDEX,
    MALIGNANCY,
    LabelEncoder,
    LabelError,
    MultiHotEncoder,
    malignancy_from_birads,
)
from models.data.preprocess import GeometricTransform, PreprocessConfig, load_preprocessed, preprocess_image
from models.data.reading import DataQuirkWarning, ReadOptions
from models.data.rsna import read_rsna
from models.data.tables import IMAGE_COLUMNS, Box, with_validation_split
from models.data.vindr import read_vindr

__all__ = [
    "BIRADS3",
    "BIRADS5",
    "BREAST_VIEWS",
    "DEFAULT_LABELS",
    "DENSITY",
    "EXAM_VIEWS",
    "FINDINGS",
    "IGNORE_INDEX",
    "IMAGE_COLUMNS",
    "MALIGNANCY",
    "Box",
    "BreastDataset",
    "DataError",
    "DataQuirkWarning",
    "DicomError",
    "DicomImage",
    "DicomWriteSpec",
    "ExamDataset",
    "GeometricTransform",
    "ImageDataset",
    "LabelEncoder",
    "LabelError",
    "MultiHotEncoder",
    "PreprocessCache",
    "PreprocessConfig",
    "ReadOptions",
    "TableError",
    "collate",
    "load_preprocessed",
    "malignancy_from_birads",
    "preprocess_image",
    "read_dicom",
    "read_rsna",
    "read_vindr",
    "with_validation_split",
    "write_dicom",
]
