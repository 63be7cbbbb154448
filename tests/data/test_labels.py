"""Label encoders: vocabularies, groupings, missing values, clear errors on unknown values."""

import math

import numpy as np
import pandas as pd
import pytest

from models.data import schema
from models.data.labels import (
    BIRADS3,
    BIRADS5,
    DEFAULT_LABELS,
    DENSITY,
    FINDINGS,
    IGNORE_INDEX,
    MALIGNANCY,
    LabelError,
    malignancy_from_birads,
    parse_birads,
)


@pytest.mark.parametrize("value", ["BI-RADS 4", "4", 4, 4.0, np.int64(4), "4.0", "bi-rads 4"])
def test_birads_spellings(value):
    assert parse_birads(value) == 4
    assert BIRADS5.encode(value) == 3


def test_birads5_round_trip_and_names():
    assert [BIRADS5.encode(k) for k in range(1, 6)] == [0, 1, 2, 3, 4]
    assert [BIRADS5.decode(i) for i in range(5)] == list(schema.BIRADS)
    assert BIRADS5.num_classes == 5


def test_birads3_follows_mam_clip_grouping():
    # MAM-CLIP: BI-RADS 1,2 | BI-RADS 0 | BI-RADS 4,5, with BI-RADS 3 excluded
    assert [BIRADS3.encode(k) for k in (1, 2, 0, 4, 5)] == [0, 0, 1, 2, 2]
    assert BIRADS3.encode(3) == IGNORE_INDEX
    assert BIRADS3.class_names == ("BI-RADS 1-2", "BI-RADS 0", "BI-RADS 4-5")
    assert BIRADS5.encode(0) == IGNORE_INDEX  # incomplete: no grade among 1..5


@pytest.mark.parametrize("missing", [None, math.nan, pd.NA, "", "  "])
def test_missing_values_are_ignored_not_errors(missing):
    for encoder in (BIRADS5, BIRADS3, DENSITY, MALIGNANCY):
        assert encoder.encode(missing) == IGNORE_INDEX


@pytest.mark.parametrize(
    ("encoder", "value"),
    [(BIRADS5, "BI-RADS 7"), (BIRADS5, "high"), (BIRADS5, 6), (DENSITY, "DENSITY E"), (DENSITY, "fatty"),
     (MALIGNANCY, 2), (MALIGNANCY, "yes")],
)
def test_unknown_values_raise_naming_label_and_vocabulary(encoder, value):
    with pytest.raises(LabelError) as info:
        encoder.encode(value)
    message = str(info.value)
    assert encoder.name in message and repr(value) in message and "expected one of" in message


def test_density_letters():
    assert [DENSITY.encode(f"DENSITY {c}") for c in "ABCD"] == [0, 1, 2, 3]
    assert DENSITY.encode("c") == 2 and DENSITY.decode(3) == "D"


def test_malignancy_values_and_decode_errors():
    assert [MALIGNANCY.encode(v) for v in (0, 1, 1.0, "0", True)] == [0, 1, 1, 0, 1]
    assert MALIGNANCY.decode(1) == "malignant"
    with pytest.raises(LabelError, match="class index 5"):
        MALIGNANCY.decode(5)
    with pytest.raises(LabelError):
        BIRADS5.decode(IGNORE_INDEX)


def test_findings_multi_hot():
    vector = FINDINGS.encode(["Suspicious Calcification", "Mass"])
    assert vector.dtype == np.float32 and vector.shape == (len(schema.FINDING_CATEGORIES),)
    assert vector[0] == 1 and vector[1] == 1 and vector.sum() == 2
    assert FINDINGS.decode(vector) == ["Mass", "Suspicious Calcification"]
    assert FINDINGS.encode(["No Finding"]).sum() == 0 and FINDINGS.encode([]).sum() == 0
    assert (FINDINGS.encode(None) == IGNORE_INDEX).all()  # not annotated (RSNA)
    assert FINDINGS.decode(FINDINGS.encode(None)) == []


def test_findings_unknown_category_and_bad_types():
    with pytest.raises(LabelError, match="unknown category 'Tumour'"):
        FINDINGS.encode(["Mass", "Tumour"])
    with pytest.raises(LabelError, match="a list of category names"):
        FINDINGS.encode("['Mass']")
    with pytest.raises(LabelError, match=r"\(10,\)"):
        FINDINGS.decode([1, 0])


def test_malignancy_proxy_from_birads():
    assert [malignancy_from_birads(k) for k in (1, 2, 4, 5)] == [0.0, 0.0, 1.0, 1.0]
    assert math.isnan(malignancy_from_birads(3)) and math.isnan(malignancy_from_birads(None))
    assert math.isnan(malignancy_from_birads(0))


def test_default_labels_name_their_columns():
    assert set(DEFAULT_LABELS) == {"birads", "birads3", "density", "malignancy", "findings"}
    assert {e.column for e in DEFAULT_LABELS.values()} == {
        "breast_birads", "density", "malignancy", "finding_categories"
    }
