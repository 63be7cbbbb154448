"""RSNA reader: same table shape as VinDr, non-standard views flagged, clear errors."""

import pandas as pd
import pytest

from models.data.errors import TableError
from models.data.reading import DataQuirkWarning, ReadOptions
from models.data.rsna import read_rsna
from models.data.tables import IMAGE_COLUMNS


def test_rsna_per_image_table(rsna_root):
    table = read_rsna(rsna_root)
    assert tuple(table.columns) == IMAGE_COLUMNS and len(table) == 6
    row = table.set_index("image_id").loc["101"]
    assert row["path"] == str(rsna_root / "train_images" / "10" / "101.dcm")
    assert (row["study_id"], row["laterality"], row["view"], row["dataset"]) == ("10", "L", "CC", "rsna")
    assert (row["malignancy"], row["malignancy_source"], row["breast_birads"]) == (1.0, "cancer", 0)
    assert row["density"] == "B" and row["age"] == 55.0 and row["split"] == "training"
    assert row["finding_categories"] is None and row["boxes"] == []  # findings not annotated
    blank = table.set_index("image_id").loc["110"]
    assert pd.isna(blank["breast_birads"]) and pd.isna(blank["density"])
    assert table["height"].isna().all() and table["width"].isna().all()  # not in train.csv


def test_non_standard_views_are_kept_but_flagged(rsna_root):
    table = read_rsna(rsna_root).set_index("image_id")
    assert table.loc["111", "view"] == "ML" and not table.loc["111", "standard_view"]
    assert table.drop(index="111")["standard_view"].all()


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("laterality", "B", "one of ['L', 'R']"), ("view", "XCCL", "one of ['CC', 'MLO', 'ML'"), ("cancer", "", "0 or 1"),
     ("BIRADS", "7", "0, 1, 2"), ("density", "E", "A, B, C, D or empty")],
)
def test_bad_values(rsna_root, helpers, column, value, expected):
    path = rsna_root / "train.csv"
    rows = helpers.read_csv(path)
    rows[3][column] = value
    helpers.write_csv(path, tuple(rows[0]), rows)
    with pytest.raises(TableError) as info:
        read_rsna(rsna_root)
    message = str(info.value)
    assert f"{path}, line 5, column {column!r}" in message and expected in message


def test_missing_column_and_missing_file(rsna_root, helpers):
    path = rsna_root / "train.csv"
    rows = helpers.read_csv(path)
    helpers.write_csv(path, tuple(c for c in rows[0] if c != "cancer"), rows)
    with pytest.raises(TableError, match=r"missing column\(s\) \['cancer'\]"):
        read_rsna(rsna_root)


def test_listed_image_file_missing(rsna_root):
    (rsna_root / "train_images" / "11" / "111.dcm").unlink()
    with pytest.raises(TableError) as info:
        read_rsna(rsna_root)
    assert "line 7" in str(info.value) and "111.dcm" in str(info.value)
    assert len(read_rsna(rsna_root, check_files=False)) == 6


def test_partial_download_reads_the_images_on_disk(rsna_root):
    (rsna_root / "train_images" / "11" / "111.dcm").unlink()
    with pytest.warns(DataQuirkWarning, match="skipped 1 of 6 listed images"):
        table = read_rsna(rsna_root, ReadOptions(skip_missing_images=True))
    assert len(table) == 5 and "111" not in set(table["image_id"])
