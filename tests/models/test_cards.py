"""Cards of shipped weights: the recorded command reproduces the process's arguments."""

from __future__ import annotations

import shlex
import sys

from models import cards
from models.data.default import cache_dir


def test_provenance_quotes_arguments_and_hides_machine_paths(tmp_path, monkeypatch):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"abc")
    cached = cache_dir() / "runs" / "x"
    monkeypatch.setattr(sys, "argv", ["factor.py", "--attribute", "suspicious calcification",
                                      "--out", str(cached)])
    card = cards.provenance(weights, "mammo_interp.factor")
    assert shlex.split(card["command"]) == ["python", "-m", "mammo_interp.factor", "--attribute",
                                            "suspicious calcification", "--out", "<cache>/runs/x"]
    assert card["sha256"] == cards.sha256(weights) and card["bytes"] == 3
