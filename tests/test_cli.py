"""The shared dataclass CLI: flags, defaults, --config precedence and its errors."""

import argparse
import json
from dataclasses import dataclass, field

import pytest

from models.cli import (
    add_config_file_argument, add_dataclass_arguments, build_dataclass, parse_config, parse_with_config_file,
)
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


def test_unknown_image_encoder_name_stops_an_entry_point_while_parsing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main(["--model-image-name", "tf_efficientnet_lite9", "--out", "/nonexistent/never-written"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown timm image encoder 'tf_efficientnet_lite9'" in err and "tf_efficientnet_lite0" in err
