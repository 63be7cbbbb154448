"""Label vocabularies and encoders: raw table values to class indices and back.

Every supervised target the models see goes through one encoder here, so a value outside the
vocabulary fails loudly (:class:`LabelError`) instead of becoming a silent extra class, and a
*missing* value (``None``/NaN/empty) becomes :data:`IGNORE_INDEX`, the default ``ignore_index`` of
``torch.nn.CrossEntropyLoss``. Multi-hot targets of an unknown finding list are filled with
:data:`IGNORE_INDEX` in every position, so one mask rule (``target != IGNORE_INDEX``) serves both.

BI-RADS 3-class grouping follows MAM-CLIP (Gulluk et al. 2024, "Integrating Image Interpretation and
Textual Context for Improved Breast Imaging Classification", section 5): BI-RADS 1-2 (benign) |
BI-RADS 0 (incomplete, needs more information) | BI-RADS 4-5 (suspicious/malignant); BI-RADS 3 was
excluded from their experiments, so it encodes to :data:`IGNORE_INDEX` here. VinDr has no BI-RADS 0,
so on VinDr the middle class is empty; RSNA's ``BIRADS`` column holds 0/1/2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.data.errors import DataError
from models.data.schema import FINDING_CATEGORIES, NO_FINDING

IGNORE_INDEX = -100

_BIRADS_TEXT = re.compile(r"^(?:BI-?RADS\s*)?(\d)(?:\.0*)?$", re.IGNORECASE)
_DENSITY_TEXT = re.compile(r"^(?:DENSITY\s*)?([A-D])$", re.IGNORECASE)


class LabelError(DataError):
    """A label value outside an encoder's vocabulary."""


def is_missing(value: Any) -> bool:
    """``None``, NaN, ``pd.NA`` or an empty/whitespace string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # True only for NaN
    except TypeError:
        return True  # pd.NA: NA != NA is NA, whose truth value raises
    except ValueError:
        return False  # an array: not a missing scalar


def parse_birads(value: Any) -> int | None:
    """``"BI-RADS 4"``, ``"4"``, ``4`` or ``4.0`` to ``4``; missing to ``None``.

    Raises:
        ValueError: anything else, or a score outside 0..6.
    """
    if is_missing(value):
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        score = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        score = int(value)
    else:
        match = _BIRADS_TEXT.match(str(value).strip())
        if match is None:
            raise ValueError(f"not a BI-RADS score: {value!r}")
        score = int(match.group(1))
    if not 0 <= score <= 6:
        raise ValueError(f"BI-RADS score out of range: {value!r}")
    return score


def parse_density(value: Any) -> str | None:
    """``"DENSITY C"`` or ``"C"`` to ``"C"``; missing to ``None``.

    Raises:
        ValueError: anything else.
    """
    if is_missing(value):
        return None
    match = _DENSITY_TEXT.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a breast density: {value!r}")
    return match.group(1).upper()


def parse_binary(value: Any) -> int | None:
    """``0``/``1`` (also ``"0"``, ``1.0``, booleans, ``"true"``/``"false"``); missing to ``None``.

    Raises:
        ValueError: anything else.
    """
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true"):
        return 1
    if text in ("0", "0.0", "false"):
        return 0
    raise ValueError(f"not a 0/1 value: {value!r}")


def malignancy_from_birads(birads: Any) -> float:
    """BI-RADS proxy for malignancy when no pathology is known (VinDr has none).

    BI-RADS 4-5 (suspicious) -> 1.0; BI-RADS 1-2 (negative/benign) -> 0.0; BI-RADS 0, 3 or
    missing -> NaN (undecided). A proxy, not ground truth: most BI-RADS 4 lesions are benign at
    biopsy.
    """
    score = parse_birads(birads)
    if score in (4, 5):
        return 1.0
    if score in (1, 2):
        return 0.0
    return math.nan


class LabelEncoder:
    """One categorical target: raw values of ``column`` to class indices ``0..C-1``.

    Args:
        name: the target's name (also the dataset item key).
        column: per-image table column the raw value comes from.
        class_names: display name of each class index.
        mapping: parsed raw value -> class index.
        parse: raw value -> hashable key of ``mapping`` (``None`` for missing); raises ValueError.
        ignored: parsed values deliberately left out of the task (encode to IGNORE_INDEX).
    """

    def __init__(
        self,
        name: str,
        column: str,
        class_names: Sequence[str],
        mapping: Mapping[Hashable, int],
        parse: Callable[[Any], Hashable | None],
        ignored: Iterable[Hashable] = (),
    ) -> None:
        if sorted(set(mapping.values())) != list(range(len(class_names))):
            raise ValueError(f"{name}: mapping must hit every class 0..{len(class_names) - 1}")
        self.name = name
        self.column = column
        self.class_names = tuple(class_names)
        self.mapping = dict(mapping)
        self.parse = parse
        self.ignored = frozenset(ignored)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def encode(self, value: Any) -> int:
        """Class index of ``value``; IGNORE_INDEX for missing or deliberately ignored values.

        Raises:
            LabelError: a value that is neither in the vocabulary nor missing.
        """
        try:
            key = self.parse(value)
        except ValueError as exc:
            raise LabelError(f"label {self.name!r}", str(exc), self._expected()) from exc
        if key is None or key in self.ignored:
            return IGNORE_INDEX
        if key not in self.mapping:
            raise LabelError(f"label {self.name!r}", f"unknown value {value!r}", self._expected())
        return self.mapping[key]

    def decode(self, index: int) -> str:
        """Class name of ``index``.

        Raises:
            LabelError: an index outside ``0..num_classes-1`` (IGNORE_INDEX included).
        """
        index = int(index)
        if not 0 <= index < self.num_classes:
            raise LabelError(
                f"label {self.name!r}", f"class index {index}", f"0..{self.num_classes - 1}"
            )
        return self.class_names[index]

    def _expected(self) -> str:
        accepted = sorted(map(str, self.mapping))
        extra = f"; ignored: {sorted(map(str, self.ignored))}" if self.ignored else ""
        return f"one of {accepted} or missing{extra}"

    def __repr__(self) -> str:
        return f"LabelEncoder({self.name!r}, column={self.column!r}, classes={self.class_names})"


class MultiHotEncoder:
    """A list of finding categories to a multi-hot float vector over ``class_names``.

    ``["No Finding"]`` and ``[]`` encode to all zeros; ``None`` (findings not annotated, e.g. RSNA)
    to all IGNORE_INDEX.
    """

    def __init__(self, name: str, column: str, class_names: Sequence[str]) -> None:
        self.name = name
        self.column = column
        self.class_names = tuple(class_names)
        self._index = {c: i for i, c in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def encode(self, value: Any) -> np.ndarray:
        """float32 ``(C,)`` of 0/1, or all IGNORE_INDEX when ``value`` is missing.

        Raises:
            LabelError: a category outside the vocabulary.
        """
        if not isinstance(value, (list, tuple, np.ndarray)) and is_missing(value):
            return np.full(self.num_classes, IGNORE_INDEX, dtype=np.float32)
        if isinstance(value, str):
            raise LabelError(
                f"label {self.name!r}", f"a string {value!r}", "a list of category names"
            )
        out = np.zeros(self.num_classes, dtype=np.float32)
        for category in value:
            if category == NO_FINDING:
                continue
            if category not in self._index:
                raise LabelError(
                    f"label {self.name!r}",
                    f"unknown category {category!r}",
                    f"one of {list(self.class_names)} or {NO_FINDING!r}",
                )
            out[self._index[category]] = 1.0
        return out

    def decode(self, vector: Sequence[float] | np.ndarray) -> list[str]:
        """Names of the categories whose entry is > 0.5 (IGNORE_INDEX entries are never > 0.5)."""
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.num_classes,):
            raise LabelError(
                f"label {self.name!r}", f"vector of shape {vector.shape}", f"({self.num_classes},)"
            )
        return [c for c, v in zip(self.class_names, vector) if v > 0.5]

    def __repr__(self) -> str:
        classes = len(self.class_names)
        return f"MultiHotEncoder({self.name!r}, column={self.column!r}, classes={classes})"


BIRADS5 = LabelEncoder(
    "birads",
    "breast_birads",
    [f"BI-RADS {k}" for k in range(1, 6)],
    {k: k - 1 for k in range(1, 6)},
    parse_birads,
    ignored=(0,),  # BI-RADS 0 (incomplete) has no place among the five assessed grades
)
BIRADS3 = LabelEncoder(
    "birads3",
    "breast_birads",
    ["BI-RADS 1-2", "BI-RADS 0", "BI-RADS 4-5"],
    {1: 0, 2: 0, 0: 1, 4: 2, 5: 2},
    parse_birads,
    ignored=(3,),  # excluded, as in MAM-CLIP
)
DENSITY = LabelEncoder(
    "density", "density", ["A", "B", "C", "D"], {c: i for i, c in enumerate("ABCD")}, parse_density
)
MALIGNANCY = LabelEncoder(
    "malignancy", "malignancy", ["not malignant", "malignant"], {0: 0, 1: 1}, parse_binary
)
FINDINGS = MultiHotEncoder("findings", "finding_categories", FINDING_CATEGORIES)

# The targets a dataset item carries unless told otherwise: item key -> encoder.
DEFAULT_LABELS: dict[str, LabelEncoder | MultiHotEncoder] = {
    enc.name: enc for enc in (BIRADS5, BIRADS3, DENSITY, MALIGNANCY, FINDINGS)
}
