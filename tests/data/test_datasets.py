"""Datasets: item shapes, boxes in output pixels, missing views, collate, cache and augmentation."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.data.cache import PreprocessCache
from models.data.datasets import EXAM_VIEWS, BreastDataset, ExamDataset, ImageDataset, collate
from models.data.errors import DataError, TableError
from models.data.labels import IGNORE_INDEX, LabelError
from models.data.preprocess import GeometricTransform, PreprocessConfig
from models.data.rsna import read_rsna
from models.data.schema import FINDING_CATEGORIES
from models.data.vindr import read_vindr

CONFIG = PreprocessConfig(size=(64, 40))


@pytest.fixture
def table(vindr_root):
    return read_vindr(vindr_root)


def test_image_item(table, helpers):
    dataset = ImageDataset(table, CONFIG)
    assert len(dataset) == 7
    index = int(np.flatnonzero(table["image_id"] == "s1-L-CC")[0])
    item = dataset[index]
    assert item["image"].shape == (1, 64, 40) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert (item["image_id"], item["study_id"], item["laterality"], item["view"]) == ("s1-L-CC", "s1", "L", "CC")
    assert item["boxes"].shape == (3, 4) and item["boxes"].dtype == torch.float32
    assert item["box_labels"].tolist() == [0, 1, 1]  # Mass, Suspicious Calcification x 2
    transform = GeometricTransform.from_dict(item["transform"])
    np.testing.assert_allclose(item["boxes"][0].numpy(), transform.apply_boxes(helpers.mass_lcc), rtol=1e-6)
    np.testing.assert_allclose(transform.invert_boxes(item["boxes"][0].double().numpy()), helpers.mass_lcc, atol=1e-3)
    assert item["birads"].item() == 3 and item["birads3"].item() == 2  # BI-RADS 4
    assert item["density"].item() == 2 and item["malignancy"].item() == 1
    assert item["findings"].tolist()[:2] == [1.0, 1.0] and item["findings"].shape == (len(FINDING_CATEGORIES),)
    # the lesion drawn at the box is where the box says, in the output image
    x0, y0, x1, y1 = item["boxes"][0].round().int().tolist()
    assert item["image"][0, y0:y1, x0:x1].mean() > 0.8


def test_exam_items_with_a_missing_view(table):
    dataset = ExamDataset(table, CONFIG)
    assert len(dataset) == 2
    full, partial = dataset[0], dataset[1]
    assert full["study_id"] == "s1" and partial["study_id"] == "s2"
    assert full["views"] == ["R-CC", "L-CC", "R-MLO", "L-MLO"] == [f"{a}-{b}" for a, b in EXAM_VIEWS]
    assert full["image"].shape == (4, 1, 64, 40) and full["mask"].tolist() == [True] * 4
    assert [len(b) for b in full["boxes"]] == [0, 3, 0, 1]
    assert full["image_id"] == ["s1-R-CC", "s1-L-CC", "s1-R-MLO", "s1-L-MLO"]
    assert partial["mask"].tolist() == [True, True, False, True]
    assert partial["image"][2].abs().sum() == 0 and partial["image"][0].abs().sum() > 0
    assert partial["image_id"][2] == "" and partial["transform"][2] is None
    assert partial["birads"].tolist() == [0, 1, IGNORE_INDEX, 1]
    assert (partial["findings"][2] == IGNORE_INDEX).all() and partial["findings"].shape == (4, 10)
    assert partial["boxes"][2].shape == (0, 4)


def test_breast_items(table):
    dataset = BreastDataset(table, CONFIG)
    keys = [(dataset[i]["study_id"], dataset[i]["laterality"]) for i in range(len(dataset))]
    assert keys == [("s1", "R"), ("s1", "L"), ("s2", "R"), ("s2", "L")]
    right_s2 = dataset[2]
    assert right_s2["views"] == ["R-CC", "R-MLO"] and right_s2["mask"].tolist() == [True, False]
    left_s1 = dataset[1]
    assert left_s1["image"].shape == (2, 1, 64, 40) and [len(b) for b in left_s1["boxes"]] == [3, 1]
    assert left_s1["malignancy"].tolist() == [1, 1]


def test_collate_handles_variable_box_counts(table):
    batch = next(iter(DataLoader(ImageDataset(table, CONFIG), batch_size=7, collate_fn=collate)))
    assert batch["image"].shape == (7, 1, 64, 40) and batch["birads"].shape == (7,)
    assert batch["findings"].shape == (7, 10)
    assert sorted(len(b) for b in batch["boxes"]) == [0, 0, 0, 0, 0, 1, 3]
    assert isinstance(batch["image_id"], list) and len(batch["transform"]) == 7

    exams = collate([ExamDataset(table, CONFIG)[i] for i in range(2)])
    assert exams["image"].shape == (2, 4, 1, 64, 40) and exams["mask"].shape == (2, 4)
    assert exams["mask"].sum().item() == 7
    assert len(exams["boxes"]) == 2 and len(exams["boxes"][0]) == 4
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_collate_never_stacks_boxes_even_when_counts_agree():
    items = [{"boxes": torch.zeros(1, 4), "box_labels": torch.zeros(1, dtype=torch.long)} for _ in range(2)]
    out = collate(items)
    assert isinstance(out["boxes"], list) and isinstance(out["box_labels"], list)


def test_augmentation_transform_sees_each_view(table):
    seen = []

    def flip(item):
        seen.append(item["image_id"])
        width = item["image"].shape[-1]
        item["image"] = item["image"].flip(-1)
        item["boxes"] = item["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor([width, 0.0, width, 0])
        return item

    plain = ExamDataset(table, CONFIG)[0]
    flipped = ExamDataset(table, CONFIG, transform=flip)[0]
    assert seen == ["s1-R-CC", "s1-L-CC", "s1-R-MLO", "s1-L-MLO"]
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    assert flipped["boxes"][1][0, 0] == 40 - plain["boxes"][1][0, 2]


def test_dataset_uses_the_cache(table, tmp_path, monkeypatch):
    import models.data.preprocess as preprocess_module

    calls = []
    real = preprocess_module.read_dicom
    monkeypatch.setattr(preprocess_module, "read_dicom", lambda path, **kw: calls.append(path) or real(path, **kw))
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    dataset = ImageDataset(table, cache=cache)
    first = [dataset[i]["image"] for i in range(len(dataset))]
    second = [dataset[i]["image"] for i in range(len(dataset))]
    assert len(calls) == 7 and cache.hits == 7
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="differs from the cache"):
        ImageDataset(table, PreprocessConfig(size=(32, 20)), cache=cache)


def test_fill_cache_preprocesses_every_row_so_items_are_hits(table, tmp_path):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    dataset = ImageDataset(table, cache=cache)
    assert dataset.fill_cache(workers=1, progress=False) == len(table)
    hits = PreprocessCache(tmp_path / "cache", CONFIG)
    items = ImageDataset(table, cache=hits)
    for i in range(len(items)):
        items[i]
    assert (hits.hits, hits.misses) == (len(table), 0)
    assert ImageDataset(table).fill_cache() == 0  # no cache, nothing to fill


def test_bad_label_fails_at_construction(table):
    bad = table.copy()
    bad.loc[3, "density"] = "E"
    with pytest.raises(LabelError) as info:
        ImageDataset(bad, CONFIG)
    assert "image_id 's1-L-MLO', column 'density'" in str(info.value) and "'E'" in str(info.value)


def test_table_errors(table):
    with pytest.raises(TableError, match=r"missing columns \['boxes', 'density'\]"):
        ImageDataset(table.drop(columns=["boxes", "density"]))
    wrong = table.copy()
    wrong.loc[0, "height"] = 100
    with pytest.raises(DataError, match="96 x 64") as info:
        ImageDataset(wrong, CONFIG)[0]
    assert "100 x 64 (height x width) as in the table" in str(info.value)


def test_rsna_exam_skips_non_standard_views(rsna_root):
    dataset = ExamDataset(read_rsna(rsna_root), CONFIG)
    assert len(dataset) == 2
    patient11 = dataset[1]
    assert patient11["mask"].tolist() == [False, True, False, False]  # L-CC only; the ML view has no slot
    assert (patient11["findings"] == IGNORE_INDEX).all()  # RSNA findings are not annotated
    assert dataset[0]["malignancy"].tolist() == [0, 1, 0, 1]
