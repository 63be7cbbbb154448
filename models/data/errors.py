"""Errors for bad input data: each names the file (and row or tag) and what was expected."""

from __future__ import annotations

from pathlib import Path

from models.errors import InputError


class DataError(InputError):
    """Bad input data. The message names where the problem is and what was expected."""

    def __init__(self, where: str | Path, problem: str, expected: str | None = None) -> None:
        self.where = str(where)
        self.problem = problem
        self.expected = expected
        message = f"{where}: {problem}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


class DicomError(DataError):
    """A DICOM file that cannot be read or decoded."""


class TableError(DataError):
    """A CSV annotation table with missing columns or invalid rows."""
