"""The per-image table every reader returns, the CSV checking they share, and splits.

Readers (:mod:`models.data.vindr`, :mod:`models.data.rsna`) turn a dataset's own CSVs into one tidy
pandas table with one row per image and the columns in :data:`IMAGE_COLUMNS`, so datasets, label
encoders and analyses never see dataset-specific spellings. CSVs are read with the :mod:`csv` module
so every row keeps its physical line number for error messages (a quoted field may span lines).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from models.data.errors import TableError
from models.data.labels import parse_birads

T = TypeVar("T")

# Per-image table contract. ``finding_categories`` is a list of category names ([] = no finding) or
# None where findings are not annotated (RSNA); ``boxes`` a list of :class:`Box` in original-image
# pixels; ``malignancy`` 0.0/1.0/NaN with ``malignancy_source`` saying where it came from
# ("lesions": synthetic lesion table; "birads_proxy": labels.malignancy_from_birads; "cancer":
# RSNA's column).
IMAGE_COLUMNS = (
    "dataset", "study_id", "series_id", "image_id", "path", "laterality", "view", "standard_view",
    "height", "width", "breast_birads", "density", "split", "finding_categories", "boxes",
    "malignancy", "malignancy_source", "age", "report",
)
BOX_TOLERANCE_PX = 1.0  # how far a box may stick out of the image before it counts as past the edge
VALIDATION_SPLIT = "validation"


class Box(NamedTuple):
    """One annotated finding box: float pixel ``xyxy`` (``xmax``/``ymax`` exclusive edges)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    category: str
    birads: int | None = None
    mass_shape: str | None = None
    mass_margin: str | None = None
    malignant: bool | None = None


@dataclass(frozen=True)
class CsvRows:
    """A CSV's data rows as strings, each with the file line it starts on."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    lines: list[int]

    def where(self, index: int, column: str | None = None) -> str:
        """``"<file>, line N, column 'c'"`` for error messages."""
        where = f"{self.path}, line {self.lines[index]}"
        return f"{where}, column {column!r}" if column else where

    def cell(self, index: int, column: str, parse: Callable[[str], T], expected: str) -> T:
        """``parse(value)``; a ValueError becomes a :class:`TableError` naming the cell."""
        value = self.rows[index][column]
        try:
            return parse(value)
        except ValueError as exc:
            where = self.where(index, column)
            raise TableError(where, f"value {value!r} ({exc})", expected) from exc

    def pick(
        self, index: int, column: str, vocabulary: Iterable[str], allow_empty: bool = False
    ) -> str:
        """The cell's value: one of ``vocabulary`` (or empty, with ``allow_empty``)."""
        allowed = (*vocabulary, *(("",) if allow_empty else ()))
        expected = f"one of {[v for v in allowed if v]}" + (" or empty" if allow_empty else "")
        return self.cell(index, column, _member_of(allowed), expected)


def read_csv_rows(path: str | Path, required: Sequence[str]) -> CsvRows:
    """Read a CSV with a header line, checking that ``required`` columns are present.

    Raises:
        TableError: missing file, missing columns (with close matches among the present ones), or a
            row with the wrong number of fields.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(path, "file not found", "a CSV file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TableError(path, "empty file", f"a header line with {', '.join(required)}")
        columns = tuple(name.strip() for name in header)
        _check_columns(path, columns, required)
        rows, lines = [], []
        start = reader.line_num + 1
        for record in reader:
            if record:  # csv yields [] for blank lines
                if len(record) != len(columns):
                    raise TableError(
                        f"{path}, line {start}",
                        f"{len(record)} fields",
                        f"{len(columns)} fields as in the header",
                    )
                rows.append(dict(zip(columns, (v.strip() for v in record))))
                lines.append(start)
            start = reader.line_num + 1
    return CsvRows(path, columns, rows, lines)


def _check_columns(path: Path, columns: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    present = [c for c in columns if c not in required]
    hints = []
    lowered = {c.lower(): c for c in present}
    for name in missing:
        close = difflib.get_close_matches(name, present, n=2, cutoff=0.6) or [
            lowered[c]
            for c in difflib.get_close_matches(name.lower(), list(lowered), n=2, cutoff=0.6)
        ]
        if close:
            hints.append(f"{name!r} ~ {', '.join(map(repr, close))}")
    problem = f"missing column(s) {missing}"
    if hints:
        problem += f"; close matches found: {'; '.join(hints)}"
    raise TableError(path, problem, f"columns {list(required)}")


def _member_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError("not in the vocabulary")
        return value

    return parse


def required(parse: Callable[[str], T | None]) -> Callable[[str], T]:
    """A cell parser like ``parse`` (which maps empty to None) that rejects empty cells."""

    def parse_required(value: str) -> T:
        parsed = parse(value)
        if parsed is None:
            raise ValueError("empty")
        return parsed

    return parse_required


def birads_between(low: int, high: int) -> Callable[[str], int | None]:
    """A cell parser for an optional BI-RADS score (any spelling of :func:`parse_birads`)."""

    def parse(value: str) -> int | None:
        score = parse_birads(value)
        if score is not None and not low <= score <= high:
            raise ValueError(f"not BI-RADS {low}..{high}")
        return score

    return parse


def positive_int(value: str) -> int:
    """A cell parser for positive integers (``"3518"`` or ``"3518.0"``)."""
    number = float(value)
    if not number.is_integer() or number < 1:
        raise ValueError("not a positive integer")
    return int(number)


def optional_float(value: str) -> float:
    """A cell parser for a float or empty (NaN)."""
    return float(value) if value else float("nan")


def nonempty(value: str) -> str:
    """A cell parser for a non-empty identifier."""
    if not value:
        raise ValueError("empty")
    return value


def check_unique(rows: CsvRows, column: str) -> None:
    """Raise a :class:`TableError` naming both lines of the first duplicated value of ``column``."""
    seen: dict[str, int] = {}
    for index, row in enumerate(rows.rows):
        value = row[column]
        if value in seen:
            raise TableError(
                rows.where(index, column),
                f"duplicate {column} {value!r} (first on line {rows.lines[seen[value]]})",
                f"one row per {column}",
            )
        seen[value] = index


def check_box(rows: CsvRows, index: int, box: Sequence[float]) -> None:
    """Reject empty or inverted boxes (``xmin >= xmax`` or ``ymin >= ymax``)."""
    xmin, ymin, xmax, ymax = box
    if not (xmin < xmax and ymin < ymax):
        raise TableError(
            rows.where(index, "xmin" if not xmin < xmax else "ymin"),
            f"empty or inverted box xyxy=({xmin}, {ymin}, {xmax}, {ymax})",
            "xmin < xmax and ymin < ymax",
        )


def image_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Assemble reader records into the per-image table (column order and dtypes fixed)."""
    frame = pd.DataFrame.from_records(records, columns=list(IMAGE_COLUMNS))
    for column in ("height", "width", "breast_birads"):
        frame[column] = frame[column].astype("Int64")
    for column in ("malignancy", "age"):
        frame[column] = frame[column].astype(np.float64)
    frame["standard_view"] = frame["standard_view"].astype(bool)
    return frame


def _split_rank(study_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{study_id}".encode()).digest()


def with_validation_split(
    table: pd.DataFrame,
    fraction: float = 0.1,
    seed: int = 0,
    source: str = "training",
    name: str = VALIDATION_SPLIT,
) -> pd.DataFrame:
    """Move ``fraction`` of the ``source`` split's studies (all their images) into split ``name``.

    Deterministic and independent of row order and of global RNG state: studies are ranked by a
    hash of ``(seed, study_id)`` and the ``round(fraction * n_studies)`` lowest go. For RSNA,
    ``study_id`` is the patient, so the split is by patient. Returns a copy.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    out = table.copy()
    in_source = out["split"] == source
    studies = sorted(set(out.loc[in_source, "study_id"]), key=lambda s: _split_rank(str(s), seed))
    chosen = set(studies[: round(fraction * len(studies))])
    out.loc[in_source & out["study_id"].isin(chosen), "split"] = name
    return out
