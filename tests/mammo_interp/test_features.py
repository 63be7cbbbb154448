"""The feature cache shared by FActOR and the split-level studies: one load-or-compute rule, keys that
separate precisions, and DataLoader workers that change nothing but speed."""

from __future__ import annotations

import pytest
import torch

from mammo_interp.features import FeatureSet, cached_features, extract_features, load_or_compute
from models.checkpoints import load_clip
from models.data.datasets import ImageDataset
from models.data.sources import load_splits, preprocess_cache
from models.device import Precision


@pytest.fixture(scope="module")
def encoder_and_images(tiny_masses, tiny_checkpoint):
    table = load_splits(str(tiny_masses), 0.2, 1, progress=False)["test"].head(6)
    return load_clip(tiny_checkpoint).image_encoder.eval(), ImageDataset(table, cache=preprocess_cache((128, 80)))


def test_workers_give_the_same_features(encoder_and_images, one_torch_thread):
    encoder, images = encoder_and_images
    main = extract_features(encoder, images, batch_size=4, progress=False)
    workers = extract_features(encoder, images, batch_size=4, progress=False, workers=2)
    assert torch.equal(main.maps, workers.maps) and torch.equal(main.masks, workers.masks)
    assert main.image_ids == workers.image_ids and main.transforms == workers.transforms


def test_cache_keys_separate_precisions_and_a_hit_computes_nothing(encoder_and_images, tmp_path, monkeypatch,
                                                                   one_torch_thread):
    encoder, images = encoder_and_images
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return extract_features(*args, **kwargs)

    monkeypatch.setattr("mammo_interp.features.extract_features", counted)
    fp32 = cached_features(tmp_path, {"model": "m"}, encoder, images, "head", 4, False)
    again = cached_features(tmp_path, {"model": "m"}, encoder, images, "head", 4, False, workers=1)
    bf16 = cached_features(tmp_path, {"model": "m"}, encoder, images, "head", 4, False,
                           precision=Precision(torch.device("cpu"), torch.bfloat16))
    assert len(calls) == 2 and len(list(tmp_path.glob("features-*.pt"))) == 2
    assert torch.equal(fp32.maps, again.maps) and not torch.equal(fp32.maps, bf16.maps)


@pytest.mark.parametrize("damage", [b"", b"not a torch file", None])
def test_a_damaged_or_foreign_cache_file_is_recomputed(tmp_path, damage):
    path = tmp_path / "entry.pt"
    if damage is None:  # a readable file of another format
        torch.save({"format": "something else"}, path)
    else:
        path.write_bytes(damage)
    computed = []

    def compute() -> dict:
        computed.append(1)
        return {"format": "x", "value": torch.arange(3)}

    def decode(payload: dict) -> dict:
        if payload.get("format") != "x":
            raise ValueError("foreign file")
        return payload

    first = load_or_compute(path, compute, lambda value: value, decode)
    second = load_or_compute(path, compute, lambda value: value, decode)
    assert computed == [1] and torch.equal(first["value"], second["value"])


def test_feature_payload_round_trips(encoder_and_images, one_torch_thread):
    encoder, images = encoder_and_images
    features = extract_features(encoder, images, batch_size=4, progress=False)
    back = FeatureSet.from_payload(features.to_payload())
    assert torch.equal(back.maps, features.maps) and back.layer == features.layer
    assert all((a == b).all() for a, b in zip(back.boxes, features.boxes))
