"""What the dataset readers do with the quirks of real files, rather than rejecting the dataset.

Two quirks of real downloads are normal, not errors: VinDr-Mammo v1.0 has 36 finding boxes that
stick out of their image by 1.4-41 px, and users often download only part of the images. A box past
the edge is clipped to the image (or dropped, or refused: ``--box-policy``) and counted, with one
warning per file; images that are listed but absent are skipped and counted when
``--skip-missing-images`` is on. A truly broken row (an inverted box, a box entirely outside its
image) is still an error naming its file and line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from models.data.errors import TableError
from models.data.tables import BOX_TOLERANCE_PX, CsvRows
from models.errors import check_choice

BOX_POLICIES = ("clip", "drop", "error")


class DataQuirkWarning(UserWarning):
    """A real-data quirk the reader repaired or skipped (boxes past the edge, missing images)."""


@dataclass(frozen=True)
class ReadOptions:
    """How a reader treats boxes past the image edge and listed images missing on disk."""

    box_policy: str = field(default="clip", metadata={
        "help": f"boxes past the image edge (beyond {BOX_TOLERANCE_PX:g} px): clip them to the image, "
                f"drop them, or stop with an error; one of {BOX_POLICIES}"})
    skip_missing_images: bool = field(default=False, metadata={
        "help": "use only the listed images that exist on disk (a partial download), counting those "
                "skipped; off: a missing image is an error"})

    def __post_init__(self) -> None:
        check_choice("box_policy", self.box_policy, BOX_POLICIES)


def read_options_field() -> ReadOptions:
    """The ``reading`` section every dataset-reading config declares: its flags keep their own names
    (``--box-policy``, ``--skip-missing-images``) on every command."""
    return field(default_factory=ReadOptions, metadata={
        "flatten": True, "help": "real-data quirks: boxes past the image edge, partial downloads"})


@dataclass
class EdgeBoxes:
    """Boxes of one file that stick out of their image: how many, and the largest overshoot (px)."""

    rows: CsvRows
    policy: str
    count: int = 0
    largest: float = 0.0

    def fit(self, index: int, box: Sequence[float], height: int, width: int) -> tuple[float, ...] | None:
        """``box`` (xyxy px) inside the ``width`` x ``height`` image per the policy; None if dropped.

        Raises:
            TableError: a box entirely outside the image (any policy), or past the edge under
                policy ``error``.
        """
        xmin, ymin, xmax, ymax = box
        if xmax <= 0 or ymax <= 0 or xmin >= width or ymin >= height:
            raise TableError(self.rows.where(index), f"box xyxy={tuple(box)} lies entirely outside the "
                             f"{width} x {height} image", "a box overlapping its image")
        overshoot = max(-xmin, -ymin, xmax - width, ymax - height)
        if overshoot <= BOX_TOLERANCE_PX:
            return tuple(box)
        if self.policy == "error":
            raise TableError(self.rows.where(index), f"box xyxy={tuple(box)} extends {overshoot:g} px past "
                             f"the {width} x {height} image",
                             f"boxes within {BOX_TOLERANCE_PX:g} px of the image (or --box-policy clip|drop)")
        self.count += 1
        self.largest = max(self.largest, overshoot)
        if self.policy == "drop":
            return None
        return (max(xmin, 0.0), max(ymin, 0.0), min(xmax, float(width)), min(ymax, float(height)))

    def warn(self) -> None:
        """One warning for the whole file, if any box was past the edge."""
        if self.count:
            done = "clipped to the image" if self.policy == "clip" else "dropped"
            warnings.warn(f"{self.rows.path}: {self.count} box(es) extend past their image by up to "
                          f"{self.largest:.1f} px; {done} (--box-policy)", DataQuirkWarning, stacklevel=3)


def present_images(rows: CsvRows, paths: Sequence[Path], skip_missing: bool) -> list[int]:
    """Positions of the listed images found on disk; all of them unless ``skip_missing``.

    Raises:
        TableError: an image missing when not ``skip_missing`` (the first, its line, the count), or
            no listed image on disk at all.
    """
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing and (not skip_missing or len(missing) == len(paths)):
        first = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        expected = ("at least one listed image on disk" if skip_missing
                    else "every listed image on disk (or --skip-missing-images for a partial download)")
        raise TableError(rows.where(first, "image_id"), f"image file missing: {paths[first]}{more}", expected)
    if missing:
        warnings.warn(f"{rows.path}: skipped {len(missing)} of {len(paths)} listed images not on disk "
                      f"(first: {paths[missing[0]]}) (--skip-missing-images)", DataQuirkWarning, stacklevel=3)
    absent = set(missing)
    return [i for i in range(len(paths)) if i not in absent]
