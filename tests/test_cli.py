"""The shared CLI: dataclass flags, defaults, --config precedence, usage errors, and one-line exits on
bad input (run_main)."""

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from models.checkpoints import load_checkpoint
from models.cli import (
    OUTPUT_FOLDERS, add_config_file_argument, add_dataclass_arguments, build_dataclass, check_output_folders, parse_config,
    parse_with_config_file, run_main,
)
from models.data.errors import DataError
from models.data.reading import DataQuirkWarning, ReadOptions
from models.io import atomic_write, save_json
from models.finetune import FinetuneConfig
from models.pretrain import PretrainConfig
from models.reference import ReferenceConfig
from mammo_interp.embeddings import EmbeddingConfig
from mammo_interp.factor import FactorConfig
from mammo_interp.report import ReportConfig
from mammo_interp.saliency import SaliencyConfig
from mammo_interp.zeroshot import ZeroShotConfig
from analyses.localization_table import LocalizationTableConfig
from analyses.per_view_saliency import PerViewSaliencyConfig
from analyses.prompt_ablation import PromptAblationConfig
from models.pretrain import main as pretrain_main


@dataclass(frozen=True)
class Toy:
    steps: int = field(default=3, metadata={"help": "how many"})
    rate: float = 0.5
    name: str | None = None
    sizes: tuple[int, ...] = (1, 2)
    verbose: bool = False


def _parser():
    parser = argparse.ArgumentParser()
    add_config_file_argument(parser)
    add_dataclass_arguments(parser, Toy)
    return parser


def test_defaults_flags_and_types():
    assert build_dataclass(Toy, parse_with_config_file(_parser(), [])) == Toy()
    args = parse_with_config_file(_parser(), ["--steps", "7", "--sizes", "4", "5", "6", "--verbose", "--name", "x"])
    assert build_dataclass(Toy, args) == Toy(steps=7, sizes=(4, 5, 6), verbose=True, name="x")
    assert "how many (default: 3)" in _parser().format_help()


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"steps": 9, "rate": 0.1}))
    args = parse_with_config_file(_parser(), ["--config", str(path), "--rate", "0.2"])
    assert build_dataclass(Toy, args) == Toy(steps=9, rate=0.2)


def test_config_file_errors_name_the_file_and_keys(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 1}))
    with pytest.raises(SystemExit):
        parse_with_config_file(_parser(), ["--config", str(bad)])
    err = capsys.readouterr().err
    assert "bad.json" in err and "stepz" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit):
        parse_with_config_file(_parser(), ["--config", str(broken)])
    assert "broken.json" in capsys.readouterr().err


@dataclass(frozen=True)
class Outer:
    inner: Toy = field(default_factory=Toy, metadata={"help": "the toy"})
    epochs: int = 2


def test_nested_dataclass_flags_and_nested_config_sections(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_file_argument(parser)
    add_dataclass_arguments(parser, Outer)
    assert "--inner-steps" in parser.format_help()
    args = parse_with_config_file(parser, ["--inner-steps", "5", "--epochs", "4"])
    assert build_dataclass(Outer, args) == Outer(inner=Toy(steps=5), epochs=4)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"inner": {"rate": 0.25}, "epochs": 1}))
    args = parse_with_config_file(parser, ["--config", str(path)])
    assert build_dataclass(Outer, args) == Outer(inner=Toy(rate=0.25), epochs=1)


@dataclass(frozen=True)
class Flattened:
    inner: Toy = field(default_factory=Toy, metadata={"flatten": True})
    epochs: int = 2


def test_flattened_nested_dataclass_keeps_its_field_names():
    assert parse_config(Flattened, ["--steps", "5"], "prog", "") == Flattened(inner=Toy(steps=5))


ENTRY_CONFIGS = [ReferenceConfig, PretrainConfig, FinetuneConfig, FactorConfig, SaliencyConfig, ZeroShotConfig,
                 EmbeddingConfig, ReportConfig, PromptAblationConfig, LocalizationTableConfig, PerViewSaliencyConfig]


@pytest.mark.parametrize("config", ENTRY_CONFIGS, ids=lambda c: c.__name__)
def test_every_entry_point_takes_the_real_data_flags(config):
    parsed = parse_config(config, ["--box-policy", "drop", "--skip-missing-images"], "prog", "")
    assert parsed.reading == ReadOptions(box_policy="drop", skip_missing_images=True)
    assert parse_config(config, [], "prog", "").reading == ReadOptions()


@dataclass(frozen=True)
class Checked:
    steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_values_refused_by_the_config_are_usage_errors(capsys):
    assert parse_config(Checked, ["--steps", "2"], "prog", "") == Checked(steps=2)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Checked, ["--steps", "0"], "prog", "")
    assert exit_info.value.code == 2
    assert "prog: error: steps must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("config", ENTRY_CONFIGS, ids=lambda c: c.__name__)
def test_every_flag_states_its_default_once(config):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, config)
    helps = {action.dest: action.help or "" for action in parser._actions if action.dest != "help"}
    assert {dest: text for dest, text in helps.items() if text.count("default:") != 1} == {}


SIZED_CONFIGS = [c for c in ENTRY_CONFIGS if "image_size" in c.__dataclass_fields__]


@pytest.mark.parametrize("config", SIZED_CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("size", [["0", "0"], ["256"], ["16", "160"]])
def test_every_bad_input_size_is_a_usage_error_while_parsing(config, size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(config, ["--image-size", *size], "prog", "")
    assert exit_info.value.code == 2
    assert "prog: error: image_size" in capsys.readouterr().err
    assert parse_config(config, ["--image-size", "64", "32"], "prog", "").image_size == (64, 32)


def test_unknown_image_encoder_name_stops_an_entry_point_while_parsing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main(["--model-image-name", "tf_efficientnet_lite9", "--out", "/nonexistent/never-written"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown timm image encoder 'tf_efficientnet_lite9'" in err and "tf_efficientnet_lite0" in err


def _exit_of(main) -> SystemExit:
    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    return exit_info.value


def test_run_main_exit_status_follows_main():
    assert _exit_of(lambda: 3).code == 3
    assert _exit_of(lambda: {"a table": 1}).code == 0


def test_run_main_reports_input_errors_in_one_line_and_lets_bugs_through():
    def bad_table():
        raise DataError("/data/vindr/finding_annotations.csv:7", "xmin 900 > xmax 120", "xmin <= xmax")

    message = _exit_of(bad_table).code
    assert isinstance(message, str) and "\n" not in message  # a str code: printed to stderr, status 1
    assert message.endswith(": error: /data/vindr/finding_annotations.csv:7: xmin 900 > xmax 120 "
                            "(expected xmin <= xmax)")
    assert "not found" in _exit_of(lambda: load_checkpoint("/nonexistent/best.pt")).code
    with pytest.raises(ZeroDivisionError):
        run_main(lambda: 1 / 0)


def test_an_entry_point_given_a_folder_without_tables_fails_in_one_line(tmp_path, tiny_checkpoint):
    empty = tmp_path / "not_a_dataset"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "mammo_interp.factor", "--attribute", "mass", "--data", str(empty),
         "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
         "--report-dir", str(tmp_path / "reports"), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"python -m mammo_interp.factor: error: {empty}: no dataset tables found (expected a VinDr-Mammo "
        "folder (breast-level_annotations.csv) or an RSNA folder (train.csv))"]


def test_run_main_prints_repaired_data_quirks_in_one_line(capsys):
    def quirky():
        warnings.warn("finding_annotations.csv: 2 box(es) extend past their image", DataQuirkWarning)
        return 0

    assert _exit_of(quirky).code == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(": warning: finding_annotations.csv: 2 box(es) extend past their image")


WRITING_COMMANDS = ["models.reference", "models.pretrain", "models.default_model", "models.finetune",
                    "mammo_interp.factor", "mammo_interp.saliency", "mammo_interp.zeroshot",
                    "mammo_interp.embeddings", "mammo_interp.report", "analyses.bench",
                    "analyses.data_statistics", "analyses.difficulty_sweep", "analyses.lesion_contrast",
                    "analyses.localization_table", "analyses.per_view_saliency", "analyses.prompt_ablation",
                    "analyses.recipe_ablation", "analyses.synthetic_dataset_figure"]


@pytest.mark.parametrize("module", WRITING_COMMANDS)
def test_every_output_folder_is_checked_before_any_work(module, tmp_path, monkeypatch, capsys):
    """An unwritable output folder ends each command in one line naming the flag, right after
    parsing: the empty cache stays empty (no data generated, no model trained)."""
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    main = importlib.import_module(module).main
    flags = [f for f in OUTPUT_FOLDERS if f in _config_fields(main)]
    assert flags, f"{module} has no output folder flag"
    for name in flags:
        flag = "--" + name.replace("_", "-")
        with pytest.raises(SystemExit) as exit_info:
            main([flag, "/proc/no-such-folder/x"])
        assert exit_info.value.code == (f"python -m {module}: error: {flag} /proc/no-such-folder/x is not a "
                                        "writable folder (No such file or directory)")
    assert not (tmp_path / "cache").exists()


def _config_fields(main) -> set[str]:
    """The field names of the config dataclass an entry point parses (from its parse_command call)."""
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        def parsed(cls, *args, **kwargs):
            calls.append(cls)
            raise _Parsed
        patch.setattr(sys.modules[main.__module__], "parse_command", parsed)
        with pytest.raises(_Parsed):
            main([])
    return {f.name for f in fields(calls[0])}


class _Parsed(Exception):
    """Stops an entry point once it has named its config class."""


def test_run_main_says_where_it_wrote(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))

    def writes():
        for suffix in ("md", "csv", "tex"):
            atomic_write(tmp_path / "reports" / f"mass_head.{suffix}", lambda s: s.write(b"x"))
        save_json(tmp_path / "reports" / "summary.json", {})
        save_json(tmp_path / "cache" / "features" / "a1.json", {})
        save_json(tmp_path / "cache" / "features" / "b2.json", {})
        for name in ("3b/a.json", "c4/a.json", "c4/b.json"):  # hashed subfolders of one cache kind
            save_json(tmp_path / "cache" / "preprocessed" / name, {})

    assert _exit_of(writes).code == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": wrote ", 1)[1] for line in lines] == [
        "reports/: mass_head.{csv,md,tex}, summary.json", "<cache>/features/: 2 cached files",
        "<cache>/preprocessed/: 3 cached files in 2 subfolders"]
    atomic_write(tmp_path / "after.txt", lambda s: s.write(b"x"))  # outside an entry point: not recorded
    assert _exit_of(lambda: 0).code == 0 and capsys.readouterr().err == ""


def test_text_encoder_is_one_flag_name_across_commands(tmp_path):
    """pretrain's nested --model-text-name answers to --text-encoder too, as factor, zeroshot and
    saliency spell it."""
    folder = str(tmp_path / "my-bert")
    config = parse_config(PretrainConfig, ["--text-encoder", folder], "prog", "")
    assert config.model.text.name == folder
    assert parse_config(PretrainConfig, ["--model-text-name", folder], "prog", "") == config
    for cls in (FactorConfig, ZeroShotConfig, SaliencyConfig):
        assert parse_config(cls, ["--text-encoder", folder], "prog", "").text_encoder == folder


def test_findings_are_named_alike_by_attribute_and_task():
    for spelling in ("suspicious calcification", "Suspicious Calcification", "calcification"):
        assert parse_config(ZeroShotConfig, ["--task", spelling], "prog", "").task == "calcification"
        assert parse_config(FactorConfig, ["--attribute", spelling], "prog", "").attribute == spelling
    assert parse_config(ZeroShotConfig, ["--task", "mass_shape"], "prog", "").task == "mass_shape"
    with pytest.raises(SystemExit):
        parse_config(ZeroShotConfig, ["--task", "suspicious"], "prog", "")


def test_a_command_that_fails_leaves_no_run_record(tmp_path, monkeypatch):
    """Under run_main the record is written once main returns: a failed command wrote nothing to reproduce."""
    monkeypatch.chdir(tmp_path)

    def command(attribute):
        def main():
            config = parse_config(FactorConfig, ["--attribute", attribute, "--out", "runs", "--report-dir", "reports"],
                                  "prog", "")
            check_output_folders(config, "python -m mammo_interp.factor")
            assert not (tmp_path / "reports" / "runs.json").exists()  # not yet: the command has not finished
            if attribute == "tumour":
                raise DataError("--attribute", "tumour", "a finding category")
        return main

    assert isinstance(_exit_of(command("tumour")).code, str)
    assert not (tmp_path / "reports" / "runs.json").exists() and not (tmp_path / "runs" / "runs.json").exists()
    assert _exit_of(command("mass")).code == 0
    records = json.loads((tmp_path / "reports" / "runs.json").read_text())
    assert list(records) == ["python -m mammo_interp.factor --out runs --report-dir reports"] and (tmp_path / "runs" / "runs.json").is_file()


ROOT = Path(__file__).resolve().parents[1]
ENTRY_MODULES = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts)
                       for package in ("models", "mammo_interp", "analyses") for path in (ROOT / package).rglob("*.py")
                       if "run_main(main)" in path.read_text())


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_every_command_prints_its_help(module, capsys):
    """argparse formats help lazily: a stray ``%`` in one field's help breaks ``--help`` and nothing else."""
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0 and "--" in capsys.readouterr().out


def test_the_shared_run_options_read_alike_in_every_command():
    """``--device``, ``--precision``, ``--workers``, ``--n-boot``: one help text wherever a command has them."""
    helps: dict[str, set[str]] = {}
    for module in ENTRY_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config"):
                for item in fields(value):
                    if item.name in ("device", "precision", "workers", "n_boot"):
                        helps.setdefault(item.name, set()).add(str(item.metadata.get("help")))
    assert set(helps) == {"device", "precision", "workers", "n_boot"}
    assert {name: len(texts) for name, texts in helps.items()} == dict.fromkeys(helps, 1), helps
