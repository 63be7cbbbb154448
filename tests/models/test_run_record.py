"""The run record: its command line parses back to the same config, paths name no machine, two
commands sharing a folder keep one entry each, checkpoints are fingerprinted."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from mammo_interp.factor import FactorConfig
from models.cards import sha256
from models.cli import check_output_folders, parse_config
from models.pretrain import PretrainConfig
from models.run_record import RECORD_FILE, command_line, portable, write_run_record

PRETRAIN_ARGS = ["--epochs", "3", "--image-size", "64", "40", "--no-channels-last", "--augment",
                 "--lr", "0.0003", "--model-image-pooling", "lse", "--no-model-learn-temperature",
                 "--box-policy", "drop", "--balance-findings", "Mass", "Suspicious Calcification"]


@pytest.mark.parametrize("cls, args", [
    (PretrainConfig, PRETRAIN_ARGS),
    (FactorConfig, ["--attribute", "suspicious calcification", "--layer", "blocks.4", "--methods", "factor",
                    "gradcam", "--box-quantile", "0.9", "--mapper-epochs", "3", "--no-progress"]),
    (PretrainConfig, []),
])
def test_command_line_parses_back_to_the_same_config(cls, args):
    config = parse_config(cls, args, "prog", "")
    line = command_line(config, "python -m some.module")
    assert line.startswith("python -m some.module")
    assert parse_config(cls, shlex.split(line)[3:], "prog", "") == config
    assert len(shlex.split(line)) - 3 <= len(args)  # only what differs from the defaults


def test_paths_are_written_without_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert portable(str(tmp_path / "runs" / "x")) == "runs/x"
    assert portable({"a": [str(tmp_path / "cache" / "features")]}) == {"a": ["<cache>/features"]}
    assert portable("relative/path") == "relative/path" and portable(3) == 3
    elsewhere = "/srv/data/runs/factor_variants/global"  # under no root: only its last two parts say what it was
    assert portable(elsewhere) == "<outside>/factor_variants/global"
    assert portable(elsewhere, hide_outside=False) == elsewhere


def test_temp_paths_are_named_by_the_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "temp"))
    assert portable(str(tmp_path / "temp" / "speed_syn")) == "<tmp>/speed_syn"
    assert portable(str(tmp_path / "temp" / "speed_syn"), hide_outside=False) == str(tmp_path / "temp" / "speed_syn")
    assert portable(str(tmp_path / "work" / "runs")) == "runs"  # the working directory first


def test_no_committed_report_names_a_machine_path():
    """Every file under reports/ and the shipped cards: a path of the author's machine tells a reader nothing."""
    root = Path(__file__).resolve().parents[2]
    files = [p for folder in ("reports", "models/weights", "mammo_interp/weights") for p in (root / folder).rglob("*")
             if p.suffix in {".json", ".md", ".csv", ".tex", ".pt"}]  # .pt: the shipped checkpoints' configs
    machine = re.compile(rb"(?<![\w.<>~-])/(tmp|root|home|work|Users|private|var|srv|mnt)/")
    found = [f"{p.relative_to(root)}: {m.group(0)!r}" for p in files for m in machine.finditer(p.read_bytes())]
    assert len(files) > 50 and found == []


def test_commands_sharing_a_folder_keep_one_entry_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    mass = parse_config(FactorConfig, ["--attribute", "mass", "--checkpoint", str(checkpoint),
                                       "--report-dir", "reports"], "prog", "")
    calcification = parse_config(FactorConfig, ["--attribute", "suspicious calcification",
                                                "--report-dir", "reports"], "prog", "")
    check_output_folders(mass, "python -m mammo_interp.factor")
    write_run_record(calcification, "python -m mammo_interp.factor", ["reports"])
    write_run_record(calcification, "python -m mammo_interp.factor", ["reports"])  # a rerun replaces its entry
    records = json.loads((tmp_path / "reports" / RECORD_FILE).read_text())
    assert set(records) == {command_line(mass, "python -m mammo_interp.factor"),
                            command_line(calcification, "python -m mammo_interp.factor")}
    by_attribute = {r["config"]["attribute"]: r for r in records.values()}
    assert by_attribute["mass"]["checkpoints"]["checkpoint"] == {"file": "model.pt", "sha256": sha256(checkpoint)}
    assert by_attribute["mass"]["config"]["checkpoint"] == "model.pt"  # relative to the working directory
    shipped = by_attribute["suspicious calcification"]["checkpoints"]["checkpoint"]
    assert len(shipped["sha256"]) == 64 and "default_clip" in shipped["file"]
    assert (tmp_path / "runs" / "factor" / RECORD_FILE).is_file()  # --out gets it too
    assert str(tmp_path) not in (tmp_path / "reports" / RECORD_FILE).read_text()
