"""A command started on a busy machine lets OpenMP's waiting threads sleep after a short spin; a choice of
the user's is kept; importing the packages changes nothing; --threads sets torch's CPU threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.cli import parse_command
from models.cpu_sharing import (SHORT_SPIN, SPIN_COUNT, WAIT_POLICY, busy_cores, machine_is_busy,
                                 started_as_command)
from mammo_interp.factor import FactorConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("argv", "expected"), [
    (["python", "-m", "mammo_interp.factor", "--attribute", "mass"], True),
    (["python", "-X", "importtime", "-m", "analyses.reproduce"], True),
    (["python", "-u", "-m", "models.pretrain", "-m", "x"], True),
    (["python", "-m", "pytest", "-q", "-m", "slow"], False),
    (["python", "-c", "import models"], False),
    (["python", "script.py", "-m", "models.pretrain"], False),
    (["python", "-m"], False),
    ([], False),
])
def test_what_counts_as_a_command_of_this_project(argv, expected):
    assert started_as_command(argv) is expected


def summary_record(tmp_path: Path, env: dict[str, str]) -> dict:
    """The CPU entry of the run record of a quick command (the summary table from committed tables)."""
    done = subprocess.run([sys.executable, "-m", "analyses.localization_summary", "--report-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = json.loads((tmp_path / "runs.json").read_text()).values()
    return record["cpu"]


def test_a_command_spins_briefly_only_on_a_busy_machine():
    assert not machine_is_busy(0.3, 2) and machine_is_busy(1.0, 2) and machine_is_busy(2.5, 2)
    assert not machine_is_busy(7.9, 16) and machine_is_busy(8.0, 16)


def test_busy_cores_sees_a_busy_core():
    cores = os.cpu_count() or 1
    idle = busy_cores(0.5)
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)
        busy = busy_cores(0.5)
    finally:
        spinner.kill()
    assert 0 <= idle <= cores and busy >= 0.8 and busy > idle - 0.2


def test_a_command_keeps_the_users_choice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (WAIT_POLICY, SPIN_COUNT)}
    assert summary_record(tmp_path / "policy", {**env, WAIT_POLICY: "ACTIVE"}) | {"threads": 0} == {
        "threads": 0, WAIT_POLICY: "ACTIVE", SPIN_COUNT: None}
    assert summary_record(tmp_path / "spin", {**env, SPIN_COUNT: "5"})[SPIN_COUNT] == "5"
    assert summary_record(tmp_path / "default", env)[SPIN_COUNT] in (None, SHORT_SPIN)  # by the load at start


def test_importing_the_packages_leaves_the_openmp_settings_alone():
    env = {k: v for k, v in os.environ.items() if k not in (WAIT_POLICY, SPIN_COUNT)}
    code = ("import os, models, mammo_interp, analyses; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "None None", done.stderr[-2000:]


def test_threads_sets_torchs_cpu_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        parse_command(FactorConfig, ["--threads", "1", "--out", str(tmp_path / "o"), "--report-dir", str(tmp_path)],
                      "prog", "")
        assert torch.get_num_threads() == 1
        parse_command(FactorConfig, ["--out", str(tmp_path / "o"), "--report-dir", str(tmp_path)], "prog", "")
        assert torch.get_num_threads() == 1  # 0 leaves the count as it is
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit, match="--threads: expected 0"):
        parse_command(FactorConfig, ["--threads", "-2", "--out", str(tmp_path / "never")], "prog", "")
    assert not (tmp_path / "never").exists()  # refused before any folder is made
