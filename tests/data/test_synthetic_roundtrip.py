"""The synthetic generator's output reads back through the data layer (schema drift guard)."""

import numpy as np

from models.data.datasets import ExamDataset, collate
from models.data.preprocess import PreprocessConfig
from models.data.synth import SynthConfig, generate_dataset
from models.data.tables import IMAGE_COLUMNS
from models.data.vindr import read_vindr


def test_generated_dataset_reads_and_loads(tmp_path):
    root = generate_dataset(
        tmp_path / "synth", SynthConfig(n_studies=3, seed=5, image_height=128, finding_prevalence=1.0),
        workers=1, progress=False,
    )
    table = read_vindr(root)
    assert tuple(table.columns) == IMAGE_COLUMNS and len(table) == 12
    assert (table["malignancy_source"] == "lesions").all() and table["report"].notna().all()
    boxed = table[table["boxes"].map(len) > 0]
    assert len(boxed) > 0
    assert all(b.malignant is not None for boxes in boxed["boxes"] for b in boxes)  # every box joined
    batch = collate([ExamDataset(table, PreprocessConfig(size=(64, 40)))[i] for i in range(3)])
    assert batch["image"].shape == (3, 4, 1, 64, 40) and batch["mask"].all()
    assert np.isfinite(batch["image"].numpy()).all()
