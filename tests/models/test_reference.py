"""The supervised reference: pooling maths, balanced sampling, augmentation, and a tiny run that
writes its checkpoints, resumes to the uninterrupted result and learns a planted signal."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.encoders import ImageEncoder, ImageEncoderConfig
import models.reference as reference_module
from models.augment import augment
from models.cards import sha256
from models.reference import (FindingClassifier, ReferenceConfig, evaluate_reference, load_reference, main,
                              read_reference, selection_column, train_reference)
from models.run_record import portable
from models.sampling import balanced_order, finding_targets


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    return ImageEncoder(ImageEncoderConfig())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"findings: unknown \['Tumour'\]; valid: Mass"):
        ReferenceConfig(findings=("Tumour",))
    with pytest.raises(ValueError, match="pooling"):
        ReferenceConfig(pooling="median")
    with pytest.raises(ValueError, match="positive_fraction"):
        ReferenceConfig(positive_fraction=1.0)
    with pytest.raises(ValueError, match="select_on 'Asymmetry' must be 'mean' or one of findings"):
        ReferenceConfig(select_on="Asymmetry")


def test_pooling_against_direct_formulas(encoder):
    logit_map = torch.randn(3, 2, 4, 5)
    flat = logit_map.reshape(3, 2, -1).numpy().astype(np.float64)
    expected = {
        "avg": flat.mean(-1),
        "max": flat.max(-1),
        "lse": np.log(np.exp(5.0 * flat).mean(-1)) / 5.0,
    }
    for pooling, values in expected.items():
        model = FindingClassifier(encoder, 2, pooling=pooling)
        np.testing.assert_allclose(model.pool(logit_map).numpy(), values, rtol=1e-5, atol=1e-5)
    lse = expected["lse"]
    assert (lse >= expected["avg"] - 1e-9).all() and (lse <= expected["max"] + 1e-9).all()


def test_head_reads_the_named_layer(encoder):
    model = FindingClassifier(encoder, 2, feature_layer="blocks.4")
    images = torch.rand(2, 1, 128, 80)
    with torch.no_grad():
        assert model.logit_map(images).shape == (2, 2, 8, 5)  # stride 16
        assert model(images).shape == (2, 2)
    assert model.head.in_channels == encoder.feature_channels("blocks.4")


def test_finding_targets_reads_category_lists():
    table = pd.DataFrame({"finding_categories": [["Mass"], ["No Finding"], ["Suspicious Calcification", "Mass"],
                                                 ["Asymmetry"]]})
    targets = finding_targets(table, ("Mass", "Suspicious Calcification"))
    np.testing.assert_array_equal(targets, [[1, 0], [0, 0], [1, 1], [0, 0]])


def test_balanced_order_fraction_and_determinism():
    targets = np.zeros((200, 2), dtype=np.float32)
    targets[:5, 0] = 1  # 5 masses
    targets[5:7, 1] = 1  # 2 calcifications
    order = balanced_order(targets, 0.5, 400, torch.Generator().manual_seed(1))
    assert len(order) == 400
    positive = targets[order].sum(1) > 0
    assert positive.sum() == 200
    per_finding = targets[order].sum(0)
    assert abs(per_finding[0] - per_finding[1]) < 60  # each finding drawn about equally often
    assert order == balanced_order(targets, 0.5, 400, torch.Generator().manual_seed(1))
    assert order != balanced_order(targets, 0.5, 400, torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="with and without"):
        balanced_order(np.ones((4, 1), dtype=np.float32), 0.5, 8, torch.Generator())


def test_augment_keeps_range_and_is_seeded():
    images = torch.rand(8, 1, 32, 20)
    a = augment(images, torch.Generator().manual_seed(0))
    b = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == images.shape
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, images)


def _config(data: str, out: Path, **overrides) -> ReferenceConfig:
    # tiny_masses has masses in every split with this validation fraction and seed
    values = dict(data=data, out=str(out), report_dir=str(out / "reports"), image_size=(128, 80), epochs=2,
                  batch_size=4, validation_fraction=0.2, seed=1, n_boot=20, progress=False, findings=("Mass",))
    values.update(overrides)
    return ReferenceConfig(**values)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_masses, tmp_path, monkeypatch,
                                                            one_torch_thread):
    whole = train_reference(_config(tiny_masses, tmp_path / "whole"))
    real = reference_module.save_reference

    def crash_after_the_first_epoch(path, *args, **kwargs):
        written = real(path, *args, **kwargs)
        if Path(path).name == "last.pt":
            raise KeyboardInterrupt  # killed right after epoch 1 was saved
        return written

    monkeypatch.setattr(reference_module, "save_reference", crash_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_reference(_config(tiny_masses, tmp_path / "split"))
    monkeypatch.setattr(reference_module, "save_reference", real)
    resumed = train_reference(_config(tiny_masses, tmp_path / "split", resume=True))
    a, _ = load_reference(tmp_path / "whole" / "last.pt")
    b, _ = load_reference(tmp_path / "split" / "last.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    history = [pd.read_csv(tmp_path / d / "metrics.csv") for d in ("whole", "split")]
    assert len(history[0]) == 2
    pd.testing.assert_frame_equal(history[0].drop(columns="train_images_per_s"),
                                  history[1].drop(columns="train_images_per_s"))
    assert whole.is_file() and resumed.is_file()
    chosen = history[0][selection_column(_config(tiny_masses, tmp_path))]
    assert chosen.notna().all() and chosen.nunique() == 2  # the test can tell the epochs apart
    assert read_reference(whole)["epoch"] == history[0]["epoch"][chosen.idxmax()]


def test_main_writes_tables_in_three_formats(tiny_masses, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    table = main(["--data", str(tiny_masses), "--out", str(out), "--report-dir", str(out / "reports"),
                  "--image-size", "128", "80", "--epochs", "1", "--batch-size", "4", "--findings", "Mass",
                  "--validation-fraction", "0.2", "--seed", "1", "--n-boot", "20", "--no-progress"])
    assert list(table.columns) == ["model", "Mass AUROC"] and table["Mass AUROC"][0] != "n/a"
    for suffix in ("md", "csv", "tex"):
        assert (out / "reports" / f"reference.{suffix}").is_file()
    model, config = load_reference(out / "best.pt")
    assert config.findings == ("Mass",) and not model.training


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(Exception, match="not a supervised-reference checkpoint"):
        load_reference(path)
    with pytest.raises(FileNotFoundError):
        load_reference(tmp_path / "missing.pt")


def test_lse_head_learns_a_planted_blob(encoder, one_torch_thread):
    """On images where the positives carry one small bright blob somewhere, the reference's model and
    loss learn it within a few dozen steps (the training signal reaches the backbone)."""
    generator = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = 0.3 + 0.1 * torch.rand(n, 1, 64, 64, generator=generator)
        labels = (torch.arange(n) % 2).float()
        for i in range(n):
            if labels[i]:
                y, x = torch.randint(8, 56, (2,), generator=generator).tolist()
                images[i, 0, y - 3:y + 3, x - 3:x + 3] += 0.4
        return images, labels[:, None]

    torch.manual_seed(0)
    model = FindingClassifier(ImageEncoder(ImageEncoderConfig()), 1, pooling="lse")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):
        images, labels = batch(8)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels = batch(32)
    with torch.no_grad():
        scores = model(images)[:, 0]
    from models.metrics import auroc
    assert auroc(labels[:, 0].numpy(), scores.numpy()) > 0.9
    assert math.isfinite(float(loss.detach()))


def test_ship_to_writes_an_fp16_reference_whose_card_matches_the_file(tiny_masses, tmp_path, one_torch_thread):
    out, shipped = tmp_path / "run", tmp_path / "weights"
    main(["--data", str(tiny_masses), "--out", str(out), "--report-dir", str(out / "reports"),
          "--image-size", "128", "80", "--epochs", "1", "--batch-size", "4", "--findings", "Mass",
          "--validation-fraction", "0.2", "--seed", "1", "--n-boot", "20", "--no-progress",
          "--ship-to", str(shipped)])
    weights = shipped / reference_module.WEIGHTS_FILE
    card = json.loads((shipped / reference_module.CARD_FILE).read_text())
    assert card["sha256"] == sha256(weights) and card["bytes"] == weights.stat().st_size
    assert card["data"] == {"folder": portable(str(tiny_masses))} and card["kept_epoch"] == 1
    assert weights.stat().st_size < 0.6 * (out / "best.pt").stat().st_size  # fp16, no optimizer state
    floats = [v for v in read_reference(weights)["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    model, config = load_reference(weights)
    assert config.data == portable(str(tiny_masses))  # the shipped file names no machine path
    rescored = evaluate_reference(weights, dataclasses.replace(config, data=str(tiny_masses)))["Mass AUROC"].value
    assert card["test_auroc"]["Mass AUROC"]["value"] == pytest.approx(rescored)
    full, _ = load_reference(out / "best.pt")
    images = torch.rand(2, 1, 128, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(images), full(images), atol=0.02)
