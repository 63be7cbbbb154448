"""Preprocessing cache: decode once, identical hits, safe invalidation, corrupt entries rebuilt."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

import models.data.preprocess as preprocess_module
from models.data.cache import PreprocessCache
from models.data.errors import DicomError
from models.data.preprocess import PreprocessConfig, load_preprocessed

CONFIG = PreprocessConfig(size=(48, 32))


@pytest.fixture
def dicom(tmp_path, helpers):
    pixels = helpers.phantom(96, 64, "R", boxes=[(40, 40, 50, 50)])
    return helpers.write_dicom(tmp_path / "img.dicom", helpers.to_stored(pixels), laterality="R")


@pytest.fixture
def decodes(monkeypatch):
    """Counts calls of read_dicom made through preprocessing."""
    calls = []
    real = preprocess_module.read_dicom

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(preprocess_module, "read_dicom", counting)
    return calls


def test_hit_is_identical_and_does_not_decode(tmp_path, dicom, decodes):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    image, transform = cache.get(dicom, "R")
    assert len(decodes) == 1 and (cache.hits, cache.misses) == (0, 1)
    again, transform_again = PreprocessCache(tmp_path / "cache", CONFIG).get(dicom, "R")  # a new process, say
    assert len(decodes) == 1
    np.testing.assert_array_equal(again, image)
    assert again.dtype == np.float32 and again.shape == CONFIG.size
    assert transform_again == transform


def test_cached_image_is_the_16_bit_quantized_preprocessing(tmp_path, dicom):
    direct, transform = load_preprocessed(dicom, CONFIG, "R")
    cached, cached_transform = PreprocessCache(tmp_path, CONFIG).get(dicom, "R")
    assert cached_transform == transform
    np.testing.assert_allclose(cached, direct, atol=0.5 / 65535 + 1e-7)


def test_changed_file_or_config_or_laterality_is_a_new_entry(tmp_path, dicom, decodes, helpers):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    key = cache.key(dicom, "R")
    cache.get(dicom, "R")
    assert PreprocessCache(tmp_path / "cache", PreprocessConfig(size=(48, 30))).key(dicom, "R") != key
    assert cache.key(dicom, "L") != key
    helpers.write_dicom(dicom, helpers.to_stored(helpers.phantom(96, 64, "R")), laterality="R")
    os.utime(dicom, ns=(1, 1))  # a replaced file gets a new mtime (forced here, as writes can be fast)
    assert cache.key(dicom, "R") != key
    cache.get(dicom, "R")
    assert len(decodes) == 2


@pytest.mark.parametrize("damage", ["png_garbage", "png_truncated", "json_garbage", "json_other_key", "png_wrong_shape"])
def test_corrupt_entry_is_rebuilt(tmp_path, dicom, decodes, caplog, damage):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    image, _ = cache.get(dicom, "R")
    png, sidecar = cache.entry_paths(cache.key(dicom, "R"))
    if damage == "png_garbage":
        png.write_bytes(b"not a png")
    elif damage == "png_truncated":
        png.write_bytes(png.read_bytes()[:60])
    elif damage == "json_garbage":
        sidecar.write_text("{")
    elif damage == "json_other_key":
        sidecar.write_text(sidecar.read_text().replace(cache.key(dicom, "R"), "0" * 64))
    else:
        Image.fromarray(np.zeros((5, 5), np.uint16)).save(png)
    with caplog.at_level(logging.WARNING, logger="models.data.cache"):
        rebuilt, _ = cache.get(dicom, "R")
    assert len(decodes) == 2 and "rebuilding corrupt cache entry" in caplog.text
    np.testing.assert_array_equal(rebuilt, image)
    cache.get(dicom, "R")
    assert len(decodes) == 2  # the rebuilt entry is good


def test_writes_leave_no_temporary_files(tmp_path, dicom):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    cache.get(dicom, "R")
    cache.get(dicom, None)
    names = sorted(p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert names == [".json", ".json", ".png", ".png"]


def test_failed_write_leaves_no_entry(tmp_path, dicom, monkeypatch, decodes):
    cache = PreprocessCache(tmp_path / "cache", CONFIG)

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.get(dicom, "R")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    monkeypatch.undo()
    cache.get(dicom, "R")  # and the next call builds it


def test_bad_dicom_raises_and_caches_nothing(tmp_path):
    bad = tmp_path / "bad.dicom"
    bad.write_text("nope")
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    with pytest.raises(DicomError, match="not a DICOM file"):
        cache.get(bad)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_fill_builds_missing_entries_once_with_the_same_pixels(tmp_path, helpers, workers):
    paths = []
    for k in range(3):
        pixels = helpers.phantom(96, 64, "L", boxes=[(20 + 5 * k, 30, 30 + 5 * k, 40)])
        paths.append(helpers.write_dicom(tmp_path / f"img{k}.dicom", helpers.to_stored(pixels), laterality="L"))
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    assert cache.fill([(p, "L") for p in paths], workers=workers, progress=False) == 3
    assert cache.fill([(p, "L") for p in paths], workers=workers, progress=False) == 0  # all cached
    fresh = PreprocessCache(tmp_path / "cache", CONFIG)
    for path in paths:
        image, _ = fresh.get(path, "L")
        direct, _ = load_preprocessed(path, CONFIG, "L")
        np.testing.assert_allclose(image, direct, atol=1 / 65535)
    assert (fresh.hits, fresh.misses) == (3, 0)
