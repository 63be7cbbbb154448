"""Shared table plumbing: CSV rows with physical line numbers, and deterministic study splits."""

import pandas as pd
import pytest

from models.data.errors import TableError
from models.data.tables import read_csv_rows, with_validation_split


def _table(n_studies, images_per_study=4, split="training"):
    return pd.DataFrame(
        [{"study_id": f"study{s}", "image_id": f"{s}-{i}", "split": split}
         for s in range(n_studies) for i in range(images_per_study)]
    )


def test_validation_split_is_by_study_and_sized():
    table = pd.concat([_table(200), _table(3, split="test").assign(study_id=lambda t: "t" + t["study_id"])])
    out = with_validation_split(table, fraction=0.1, seed=0)
    validation = out[out["split"] == "validation"]
    assert validation["study_id"].nunique() == 20
    assert validation.groupby("study_id").size().eq(4).all()  # whole studies move
    assert not set(validation["study_id"]) & set(out.loc[out["split"] == "training", "study_id"])
    assert (out.loc[out["study_id"].str.startswith("t"), "split"] == "test").all()  # other splits untouched
    assert (table["split"] != "validation").all()  # input not modified


def test_validation_split_is_deterministic_and_order_free():
    table = _table(100)
    first = with_validation_split(table, 0.2, seed=3)
    shuffled = with_validation_split(table.sample(frac=1.0, random_state=1), 0.2, seed=3).loc[table.index]
    pd.testing.assert_series_equal(first["split"], shuffled["split"])
    other_seed = with_validation_split(table, 0.2, seed=4)
    assert not first["split"].equals(other_seed["split"])


def test_validation_split_ignores_global_rng_state():
    import random

    import numpy as np
    import torch

    table = _table(50)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    a = with_validation_split(table, 0.3)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    assert a.equals(with_validation_split(table, 0.3))


def test_validation_fraction_checked():
    with pytest.raises(ValueError, match="fraction"):
        with_validation_split(_table(3), fraction=1.0)


def test_rsna_style_test_split_carved_by_patient():
    table = _table(40, images_per_study=2)
    out = with_validation_split(with_validation_split(table, 0.25, name="test"), 0.1)
    assert out.groupby("split")["study_id"].nunique().to_dict() == {"test": 10, "training": 27, "validation": 3}


def test_csv_lines_count_quoted_newlines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b\n1,"two\nlines"\n\n3,4\n')
    rows = read_csv_rows(path, ["a", "b"])
    assert rows.rows == [{"a": "1", "b": "two\nlines"}, {"a": "3", "b": "4"}]
    assert rows.lines == [2, 5]
    assert rows.where(1, "b") == f"{path}, line 5, column 'b'"


def test_csv_header_tolerates_bom_and_spaces(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa , b\n1,2\n".encode())
    assert read_csv_rows(path, ["a", "b"]).rows == [{"a": "1", "b": "2"}]


def test_empty_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("")
    with pytest.raises(TableError, match="empty file"):
        read_csv_rows(path, ["a"])
