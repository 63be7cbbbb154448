"""Fixtures for the model-stack tests: small CLIP models (built once) and a tiny synthetic dataset."""

from __future__ import annotations

import pytest

from models.clip import ClipConfig, ClipModel
from models.data.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="session")
def clip_model() -> ClipModel:
    """Default architecture (offline Lite0 + MiniLM), small embedding; do not mutate."""
    return ClipModel(ClipConfig(embed_dim=64)).eval()


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> str:
    """16 synthetic studies at 256 px in the VinDr layout."""
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    generate_dataset(root, SynthConfig(n_studies=16, seed=11, image_height=256), workers=1, progress=False)
    return str(root)
