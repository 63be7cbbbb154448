"""The default dataset: generated once into the cache, reused, overridable."""

import pytest

from models.data import default
from models.data.schema import METADATA_JSON
from models.data.synth import SynthConfig

TINY = SynthConfig(n_studies=1, seed=5, image_height=96)


def test_generated_on_first_use_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(default.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(default.DATA_ENV, raising=False)
    root = default.default_data_root(config=TINY, progress=False)
    assert root.parent == tmp_path and (root / METADATA_JSON).is_file()
    stamp = (root / METADATA_JSON).stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(default, "generate_dataset", lambda *a, **k: calls.append(a))
    assert default.default_data_root(config=TINY, progress=False) == root
    assert not calls and (root / METADATA_JSON).stat().st_mtime_ns == stamp


def test_cache_path_is_stable_and_config_specific():
    assert default.synthetic_cache_path(TINY) == default.synthetic_cache_path(SynthConfig(n_studies=1, seed=5, image_height=96))
    harder = SynthConfig(n_studies=1, seed=5, image_height=96, difficulty=0.9)
    assert default.synthetic_cache_path(harder) != default.synthetic_cache_path(TINY)


def test_explicit_data_wins_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(default.DATA_ENV, str(tmp_path))
    assert default.default_data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="--data"):
        default.default_data_root(tmp_path / "nope")
    monkeypatch.setenv(default.DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="MAMMO_INTERP_DATA"):
        default.default_data_root()
