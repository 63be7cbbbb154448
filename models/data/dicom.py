"""DICOM mammogram I/O with pydicom.

Reading returns display-ready intensities: modality LUT, then VOI LUT or window when the file has one,
then MONOCHROME1 inversion, then min-max scaling, so that 0 is the darkest (least attenuating) and 1
the brightest pixel, whatever the photometric interpretation or bit depth. A window that leaves
(almost) no contrast, which real files carry when their VOI attributes do not fit the pixel data, is
ignored with a warning: the stored range is used instead. A flat image reads as all 0.
Writing produces real MG objects (16-bit, MONOCHROME1/2, optionally JPEG 2000 or RLE compressed);
the synthetic generator uses it, and tests use it to make files with known content.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    UID,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from models.data.errors import DicomError
from models.data.reading import DataQuirkWarning
from models.io import atomic_write

PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
# Full-field detectors stay below ~30 M pixels (e.g. 4096 x 5928 = 24 M); a header asking for more
# than this is a corrupt or hostile file, refused before decoding would allocate many GB.
MAX_PIXELS = 100_000_000
# A window "leaves no contrast" when fewer than this share of pixels lie strictly between its darkest
# and brightest output (a saturated window maps nearly everything to one or two values).
MIN_WINDOW_CONTRAST = 0.01
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as stored in little-endian files
COMPRESSIONS: dict[str, UID | None] = {
    "none": None,
    "jpeg2000": JPEG2000Lossless,
    "rle": RLELossless,
}


@dataclass(frozen=True)
class DicomImage:
    """A decoded mammogram. ``pixels`` is float32 (H, W) in [0, 1], bright = dense."""

    pixels: np.ndarray
    photometric: str
    bits_stored: int
    laterality: str | None
    view_position: str | None
    transfer_syntax: str
    windowed: bool


def _tag(ds: Dataset, *names: str) -> str | None:
    for name in names:
        value = ds.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def read_dicom(path: str | Path, apply_window: bool = True) -> DicomImage:
    """Read and decode one mammogram.

    Args:
        path: DICOM file.
        apply_window: apply the file's VOI LUT / window when present (else min-max only).

    Raises:
        DicomError: not a DICOM file, truncated, no pixel data, unsupported photometric
            interpretation, or a compressed transfer syntax without an installed decoder.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DicomError(path, f"not a DICOM file ({exc})", "a DICOM Part 10 file") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(path, f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        if _PIXEL_DATA_TAG in path.read_bytes():
            # pydicom drops an element cut short by the end of the file (with only a warning)
            raise DicomError(path, "PixelData cut short: file truncated", "a complete DICOM file")
        raise DicomError(path, "no PixelData element", "an image object with pixel data")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * columns > MAX_PIXELS:
        raise DicomError(path, f"image of {rows} x {columns} pixels",
                         f"at most {MAX_PIXELS:,} pixels (largest mammography detectors: ~30 M)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in PHOTOMETRIC:
        raise DicomError(path, f"PhotometricInterpretation {photometric!r}", " or ".join(PHOTOMETRIC))
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "unknown"))
    try:
        raw = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        raise DicomError(path, *_decode_failure(syntax, exc)) from exc
    except (ValueError, EOFError, OSError) as exc:
        raise DicomError(path, f"pixel data truncated or corrupt ({_one_line(exc)})") from exc
    if raw.ndim != 2:
        raise DicomError(path, f"pixel array of shape {raw.shape}", "a single 2-D frame")
    pixels = apply_modality_lut(raw, ds).astype(np.float64)
    windowed = apply_window and ("WindowCenter" in ds or "VOILUTSequence" in ds)
    if windowed:
        shown = apply_voi_lut(pixels, ds, prefer_lut=True).astype(np.float64)
        left = contrast(shown)
        if left < MIN_WINDOW_CONTRAST <= contrast(pixels):
            warnings.warn(f"{path}: its VOI window leaves {left:.1%} of pixels between black and "
                          "white; using the stored value range instead", DataQuirkWarning, stacklevel=2)
            windowed = False
        else:
            pixels = shown
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if photometric == "MONOCHROME1" and high > low:
        scaled = 1.0 - scaled
    return DicomImage(
        pixels=scaled.astype(np.float32),
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", raw.dtype.itemsize * 8)),
        laterality=_tag(ds, "ImageLaterality", "Laterality"),
        view_position=_tag(ds, "ViewPosition"),
        transfer_syntax=syntax,
        windowed=windowed,
    )


def contrast(pixels: np.ndarray) -> float:
    """Share of pixels strictly between the image's minimum and maximum (0 for a flat image)."""
    low, high = pixels.min(), pixels.max()
    return float(np.mean((pixels > low) & (pixels < high)))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _decode_failure(syntax: str, exc: BaseException) -> tuple[str, str]:
    """(problem, expectation) for pixel data no decoder could read: what was tried, what would help.

    Installing plugins is suggested only when none for this transfer syntax is installed.
    """
    uid = UID(syntax)
    problem = f"cannot decode transfer syntax {syntax} ({uid.name})"
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        return f"{problem}: pydicom has no decoder for it", "pixel data in a transfer syntax pydicom decodes"
    if not decoder.is_available:
        return (f"{problem}: no decoder plugin installed",
                f"one of: {'; '.join(decoder.missing_dependencies)}")
    lines = str(exc).splitlines()
    # pydicom: "Unable to decode as exceptions were raised by all available plugins:" then one line each
    details = "; ".join(line.strip() for line in lines[1:]) if len(lines) > 1 else _one_line(exc)
    return (f"{problem}; every installed decoder ({', '.join(decoder.available_plugins)}) failed: {details}",
            "pixel data these decoders accept (the file may be corrupt or use an unsupported variant)")


@dataclass(frozen=True)
class DicomWriteSpec:
    """What to write besides the pixels: identifiers, orientation and encoding."""

    study_uid: str
    series_uid: str
    sop_uid: str
    laterality: str
    view_position: str
    photometric: str = "MONOCHROME2"
    compression: str = "none"
    window: tuple[float, float] | None = None  # (center, width) in stored values
    bits_stored: int = 16
    manufacturer: str = "mammo-interp synthetic"


def write_dicom(path: str | Path, stored: np.ndarray, spec: DicomWriteSpec) -> None:
    """Write a uint16 array of stored values as an MG DICOM file.

    ``stored`` holds values as they go in the file: for MONOCHROME1, bright-on-display dense tissue
    must already be encoded as *low* values. The write is atomic (:func:`models.io.atomic_write`), so a
    crash never leaves a half-written image.
    """
    path = Path(path)
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ValueError(f"stored pixels must be a 2-D uint16 array, got {stored.dtype} {stored.shape}")
    if spec.photometric not in PHOTOMETRIC:
        raise ValueError(f"photometric must be one of {PHOTOMETRIC}, got {spec.photometric!r}")
    if spec.compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {spec.compression!r}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = spec.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["mammo-interp"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = spec.sop_uid
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = "MG"
    ds.Manufacturer = spec.manufacturer
    ds.StudyDate = datetime.date(2000, 1, 1).strftime("%Y%m%d")
    ds.ImageLaterality = spec.laterality
    ds.ViewPosition = spec.view_position
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    if spec.window is not None:
        ds.WindowCenter, ds.WindowWidth = (float(v) for v in spec.window)
        ds.VOILUTFunction = "LINEAR"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    syntax = COMPRESSIONS[spec.compression]
    if syntax is not None:
        ds.compress(syntax, stored, generate_instance_uid=False)
    atomic_write(path, lambda stream: ds.save_as(stream, enforce_file_format=True))
