"""VinDr reader: the tidy per-image table, side-table joins, and one clear error per bad input."""

import math
from pathlib import Path

import pytest

from models.data import schema
from models.data.errors import TableError
from models.data.reading import DataQuirkWarning, ReadOptions
from models.data.tables import IMAGE_COLUMNS, Box
from models.data.vindr import read_vindr


def test_per_image_table(vindr_root, helpers):
    table = read_vindr(vindr_root)
    assert tuple(table.columns) == IMAGE_COLUMNS
    assert len(table) == 7 and table["image_id"].is_unique
    row = table.set_index("image_id").loc["s1-L-CC"]
    assert row["path"] == str(vindr_root / "images" / "s1" / "s1-L-CC.dicom")
    assert Path(row["path"]).is_absolute()
    assert (row["laterality"], row["view"], row["height"], row["width"]) == ("L", "CC", 96, 64)
    assert (row["breast_birads"], row["density"], row["split"]) == (4, "C", "training")
    # categories in vocabulary order; the two-category box applies to each category
    assert row["finding_categories"] == ["Mass", "Suspicious Calcification"]
    assert row["boxes"] == [
        Box(*helpers.mass_lcc, category="Mass", birads=4),
        Box(*helpers.mass_lcc, category="Suspicious Calcification", birads=4),
        Box(*helpers.calc_lcc, category="Suspicious Calcification", birads=3),
    ]
    assert row["boxes"][0][:6] == (*helpers.mass_lcc, "Mass", 4)  # the (x, y, x, y, category, birads) prefix


def test_no_finding_rows_with_nan_boxes_are_accepted(vindr_root):
    table = read_vindr(vindr_root).set_index("image_id")
    for image_id in ("s1-R-CC", "s2-L-CC", "s2-L-MLO"):
        assert table.loc[image_id, "finding_categories"] == []
        assert table.loc[image_id, "boxes"] == []


def test_malignancy_is_a_birads_proxy_without_lesion_table(vindr_root):
    table = read_vindr(vindr_root).set_index("image_id")
    assert (table["malignancy_source"] == "birads_proxy").all()
    assert table.loc["s1-L-CC", "malignancy"] == 1.0  # BI-RADS 4
    assert table.loc["s1-R-CC", "malignancy"] == 0.0  # BI-RADS 1
    assert table["report"].isna().all()


def test_synthetic_side_tables_are_joined(synthetic_vindr_root, helpers):
    table = read_vindr(synthetic_vindr_root).set_index("image_id")
    assert (table["malignancy_source"] == "lesions").all()
    assert table.loc["s1-L-CC", "malignancy"] == 1.0 and table.loc["s1-L-MLO", "malignancy"] == 1.0
    assert table.loc["s1-R-CC", "malignancy"] == 0.0 and table.loc["s2-L-CC", "malignancy"] == 0.0
    mass, calc_same_box, calc = table.loc["s1-L-CC", "boxes"]
    assert (mass.mass_shape, mass.mass_margin, mass.malignant) == ("irregular", "spiculated", True)
    assert calc_same_box.malignant is None  # no lesion row for this category of the shared box
    assert calc.malignant is False and calc.mass_shape is None
    assert table.loc["s1-L-MLO", "boxes"][0] == Box(*helpers.mass_lmlo, "Mass", 4, "irregular", "spiculated", True)
    assert table.loc["s1-R-MLO", "report"].startswith("Irregular spiculated mass,\nleft")
    assert table.loc["s2-L-CC", "report"] == "No suspicious findings. BI-RADS 2."


def test_check_files_off_needs_no_images(vindr_root):
    for dicom in (vindr_root / "images").rglob("*.dicom"):
        dicom.unlink()
    assert len(read_vindr(vindr_root, check_files=False)) == 7


# ---------------------------------------------------------------- bad inputs, one per test


def _edit(helpers, root, name, edit, columns=None):
    """Rewrite CSV ``name`` under ``root`` after ``edit(rows)`` (rows are dicts of strings)."""
    path = root / name
    rows = helpers.read_csv(path)
    columns = columns or list(rows[0])
    edit(rows)
    helpers.write_csv(path, tuple(columns), rows)
    return path


def _error(root):
    with pytest.raises(TableError) as info:
        read_vindr(root)
    return str(info.value)


def test_missing_column(vindr_root, helpers):
    columns = [c for c in schema.BREAST_LEVEL_COLUMNS if c not in ("view_position", "breast_density")]
    path = _edit(helpers, vindr_root, schema.BREAST_LEVEL_CSV, lambda rows: None, columns)
    message = _error(vindr_root)
    assert str(path) in message
    assert "missing column(s) ['view_position', 'breast_density']" in message
    assert "expected columns ['study_id'" in message


def test_renamed_column_suggests_close_match(vindr_root, helpers):
    def rename(rows):
        for row in rows:
            row["ViewPosition"] = row.pop("view_position")

    columns = [("ViewPosition" if c == "view_position" else c) for c in schema.FINDING_COLUMNS]
    path = _edit(helpers, vindr_root, schema.FINDING_CSV, rename, columns)
    message = _error(vindr_root)
    assert str(path) in message and "['view_position']" in message and "'view_position' ~ 'ViewPosition'" in message


def _set(row_index, column, value):
    def edit(rows):
        rows[row_index][column] = value

    return edit


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("laterality", "X", "expected one of ['L', 'R']"),
        ("view_position", "ML", "expected one of ['CC', 'MLO']"),
        ("breast_birads", "BI-RADS 0", "'BI-RADS 1' .. 'BI-RADS 5'"),
        ("breast_density", "DENSITY E", "'DENSITY A' .. 'DENSITY D'"),
        ("height", "-3", "expected a positive integer"),
        ("split", "val", "expected one of ['training', 'test']"),
    ],
)
def test_bad_breast_level_value(vindr_root, helpers, column, value, expected):
    path = _edit(helpers, vindr_root, schema.BREAST_LEVEL_CSV, _set(2, column, value))
    message = _error(vindr_root)
    assert f"{path}, line 4, column {column!r}" in message
    assert repr(value) in message and expected in message


def test_duplicate_image_id(vindr_root, helpers):
    path = _edit(helpers, vindr_root, schema.BREAST_LEVEL_CSV, lambda rows: rows[5].update(image_id=rows[1]["image_id"]))
    message = _error(vindr_root)
    assert f"{path}, line 7, column 'image_id'" in message
    assert "duplicate image_id 's1-L-CC' (first on line 3)" in message


def _finding_row(rows, image_id, category="Mass"):
    """Position of ``image_id``'s row naming ``category`` (finding table or synthetic lesion table)."""
    return next(i for i, r in enumerate(rows) if r["image_id"] == image_id
                and category in r.get("finding_categories", r.get("finding_category")))


def test_inverted_box(vindr_root, helpers):
    def invert(rows):
        i = _finding_row(rows, "s1-L-MLO")
        rows[i]["xmin"], rows[i]["xmax"] = rows[i]["xmax"], rows[i]["xmin"]

    path = _edit(helpers, vindr_root, schema.FINDING_CSV, invert)
    message = _error(vindr_root)
    assert f"{path}, line " in message and "column 'xmin'" in message
    assert "inverted box" in message and "xmin < xmax and ymin < ymax" in message


def _past_edge(helpers, root, name=schema.FINDING_CSV):
    """Move the left-MLO mass box 2.5 px past the right edge (width 64, tolerance 1 px)."""
    return _edit(helpers, root, name, lambda rows: rows[_finding_row(rows, "s1-L-MLO")].update(xmax="66.5"))


def test_box_past_edge_is_clipped_and_counted_once_per_file(vindr_root, helpers):
    path = _edit(helpers, vindr_root, schema.FINDING_CSV, lambda rows: rows[_finding_row(rows, "s1-L-CC")].update(
        xmin="-6.25"))
    _past_edge(helpers, vindr_root)
    with pytest.warns(DataQuirkWarning) as caught:
        table = read_vindr(vindr_root).set_index("image_id")
    assert len(caught) == 1
    assert str(caught[0].message) == (f"{path}: 2 box(es) extend past their image by up to 6.2 px; "
                                      "clipped to the image (--box-policy)")
    assert table.loc["s1-L-MLO", "boxes"][0][:4] == (12.0, 30.0, 64.0, 44.0)
    assert table.loc["s1-L-CC", "boxes"][0][:4] == (0.0, 40.0, 22.0, 52.0)


def test_box_past_edge_dropped_keeps_the_label(vindr_root, helpers):
    _past_edge(helpers, vindr_root)
    with pytest.warns(DataQuirkWarning, match="1 box.* dropped"):
        row = read_vindr(vindr_root, ReadOptions(box_policy="drop")).set_index("image_id").loc["s1-L-MLO"]
    assert row["boxes"] == [] and row["finding_categories"] == ["Mass"]


def test_box_past_edge_is_an_error_on_request(vindr_root, helpers):
    path = _past_edge(helpers, vindr_root)
    with pytest.raises(TableError) as info:
        read_vindr(vindr_root, ReadOptions(box_policy="error"))
    message = str(info.value)
    assert str(path) in message and "extends 2.5 px past the 64 x 96 image" in message
    assert "--box-policy clip|drop" in message


@pytest.mark.parametrize("policy", ["clip", "drop", "error"])
def test_box_entirely_outside_is_an_error_under_every_policy(vindr_root, helpers, policy):
    _edit(helpers, vindr_root, schema.FINDING_CSV,
          lambda rows: rows[_finding_row(rows, "s1-L-MLO")].update(xmin="70", xmax="80"))
    with pytest.raises(TableError, match="lies entirely outside the 64 x 96 image"):
        read_vindr(vindr_root, ReadOptions(box_policy=policy))


def test_unknown_box_policy_is_refused():
    with pytest.raises(ValueError, match="box_policy: unknown 'trim'; valid: clip, drop, error"):
        ReadOptions(box_policy="trim")


def test_lesion_box_past_edge_still_matches_its_clipped_finding(synthetic_vindr_root, helpers):
    for name in (schema.FINDING_CSV, schema.SYNTH_LESIONS_CSV):
        _past_edge(helpers, synthetic_vindr_root, name)
    with pytest.warns(DataQuirkWarning):
        box = read_vindr(synthetic_vindr_root).set_index("image_id").loc["s1-L-MLO", "boxes"][0]
    assert box[:4] == (12.0, 30.0, 64.0, 44.0) and box.malignant is True


def test_partial_download_reads_the_images_on_disk(vindr_root):
    missing = vindr_root / "images" / "s2" / "s2-L-MLO.dicom"
    missing.unlink()
    with pytest.warns(DataQuirkWarning, match=f"skipped 1 of 7 listed images not on disk \\(first: {missing}\\)"):
        table = read_vindr(vindr_root, ReadOptions(skip_missing_images=True))
    assert len(table) == 6 and "s2-L-MLO" not in set(table["image_id"])


def test_partial_download_without_any_image_is_an_error(vindr_root):
    for dicom in (vindr_root / "images").rglob("*.dicom"):
        dicom.unlink()
    with pytest.raises(TableError, match="at least one listed image on disk"):
        read_vindr(vindr_root, ReadOptions(skip_missing_images=True))


def test_box_within_tolerance_is_accepted(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.FINDING_CSV, lambda rows: rows[_finding_row(rows, "s1-L-MLO")].update(xmax="64.8"))
    assert read_vindr(vindr_root).set_index("image_id").loc["s1-L-MLO", "boxes"][0].xmax == 64.8


@pytest.mark.parametrize(
    ("value", "problem"),
    [("Mass", "not a Python list literal"), ("['Tumour']", "unknown categories"), ("[]", "non-empty list"),
     ("['No Finding', 'Mass']", "together with findings"), ("__import__('os')", "not a Python list literal")],
)
def test_garbage_finding_categories(vindr_root, helpers, value, problem):
    path = _edit(helpers, vindr_root, schema.FINDING_CSV, _set(0, "finding_categories", value))
    message = _error(vindr_root)
    assert f"{path}, line 2, column 'finding_categories'" in message and problem in message


def test_partly_empty_box(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.FINDING_CSV, lambda rows: rows[_finding_row(rows, "s1-L-MLO")].update(ymax=""))
    assert "box partly empty" in _error(vindr_root)


def test_box_on_no_finding_row(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.FINDING_CSV, lambda rows: rows[0].update(xmin="1", ymin="1", xmax="5", ymax="5"))
    assert "a box on a 'No Finding' row" in _error(vindr_root)


def test_finding_for_unlisted_image(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.FINDING_CSV, _set(0, "image_id", "ghost"))
    message = _error(vindr_root)
    assert "line 2, column 'image_id'" in message and "'ghost' is not in breast-level_annotations.csv" in message


def test_finding_disagrees_with_breast_level(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.FINDING_CSV, _set(0, "height", "97"))
    assert "column 'height'" in (message := _error(vindr_root)) and "disagrees" in message


def test_listed_image_file_missing(vindr_root):
    missing = vindr_root / "images" / "s2" / "s2-L-MLO.dicom"
    missing.unlink()
    message = _error(vindr_root)
    assert f"{vindr_root / schema.BREAST_LEVEL_CSV}, line 8" in message
    assert f"image file missing: {missing}" in message and "--skip-missing-images" in message


def test_lesion_without_matching_box(synthetic_vindr_root, helpers):
    _edit(helpers, synthetic_vindr_root, schema.SYNTH_LESIONS_CSV, _set(0, "xmin", "2.0"))
    message = _error(synthetic_vindr_root)
    assert f"{synthetic_vindr_root / schema.SYNTH_LESIONS_CSV}, line 2" in message
    assert "no 'Mass' box" in message and "within 1 px" in message


def test_report_for_unknown_study_names_physical_line(synthetic_vindr_root, helpers):
    # the first report spans two lines, so the second record starts on line 4
    _edit(helpers, synthetic_vindr_root, schema.REPORTS_CSV, _set(1, "study_id", "s9"))
    message = _error(synthetic_vindr_root)
    assert f"{synthetic_vindr_root / schema.REPORTS_CSV}, line 4, column 'study_id'" in message


def test_missing_table_file(vindr_root):
    (vindr_root / schema.FINDING_CSV).unlink()
    assert "file not found" in _error(vindr_root)


def test_short_row(vindr_root):
    path = vindr_root / schema.BREAST_LEVEL_CSV
    path.write_text(path.read_text() + "s3,x,y,L\n")
    assert "line 9" in (message := _error(vindr_root)) and "4 fields" in message and "10 fields" in message


def test_nan_malignancy_for_birads_3(vindr_root, helpers):
    _edit(helpers, vindr_root, schema.BREAST_LEVEL_CSV, _set(0, "breast_birads", "BI-RADS 3"))
    assert math.isnan(read_vindr(vindr_root)["malignancy"].iloc[0])
