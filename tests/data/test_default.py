"""The default dataset: generated once into the cache, reused, overridable."""

from pathlib import Path

import pytest

from models.data import default
from models.data.schema import METADATA_JSON
from models.data.sources import TEST, VALIDATION, load_splits
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


def test_evaluation_splits_generate_only_their_studies_exactly_as_in_the_whole_set(tmp_path, monkeypatch):
    monkeypatch.setenv(default.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(default.DATA_ENV, raising=False)
    monkeypatch.setattr(default, "DEFAULT_SYNTH", SynthConfig(n_studies=16, seed=4, image_height=96))
    evaluation = load_splits(validation_fraction=0.3, progress=False, needed=(VALIDATION, TEST))
    assert evaluation.train.empty and not evaluation.validation.empty and not evaluation.test.empty
    subset_studies = len(set(evaluation.validation["study_id"]) | set(evaluation.test["study_id"]))
    assert len(list((evaluation.root / "images").iterdir())) == subset_studies < 16

    whole = load_splits(validation_fraction=0.3, progress=False)
    assert whole.root != evaluation.root and not whole.train.empty
    for name in (VALIDATION, TEST):
        ours, theirs = evaluation[name], whole[name]
        assert len(ours) and ours.drop(columns="path").astype(str).equals(theirs.drop(columns="path").astype(str))
        for mine, full in zip(ours["path"], theirs["path"]):
            assert Path(mine).read_bytes() == Path(full).read_bytes()
    # once the whole set is cached, evaluations read it
    assert load_splits(validation_fraction=0.3, progress=False, needed=(TEST,)).root == whole.root
    with pytest.raises(ValueError, match=r"^splits: unknown \[.train.\]; valid: training"):
        load_splits(progress=False, needed=("train",))
