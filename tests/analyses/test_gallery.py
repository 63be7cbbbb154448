"""The gallery: its page shows every panel and links what exists; a failed panel is one line and the
others still draw."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyses import gallery
from analyses.gallery import PANELS, Panel

ROOT = Path(__file__).resolve().parents[2]


def test_page_shows_every_panel_and_its_links_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # full-scale versions are named from the repository root
    report_dir = Path(os.path.relpath(tmp_path / "gallery", ROOT))
    (report_dir / "factor").mkdir(parents=True)
    (report_dir / "factor" / "mass_head_overlay.png").write_bytes(b"png")
    text = gallery.page(report_dir)
    assert all(f"## {panel.title}" in text for panel in PANELS)
    assert "](factor/mass_head_overlay.png)" in text
    assert text.count("Not drawn yet") == len(PANELS) - 1
    links = [line.split("](")[-1].rstrip(").") for line in text.splitlines() if "full scale: [" in line]
    assert len(links) == len(PANELS) and all((report_dir / link).exists() for link in links)


def test_a_failed_panel_is_one_line_and_the_others_draw(tiny_masses, tmp_path, monkeypatch, capsys):
    panels = (Panel("broken", "Broken", "fails", "json.tool", ("--no-such-flag",), reads=()),
              next(p for p in PANELS if p.name == "synthetic_exam"))
    monkeypatch.setattr(gallery, "PANELS", panels)
    status = gallery.main(["--data", str(tiny_masses), "--report-dir", str(tmp_path), "--no-progress"])
    assert status == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "panel broken failed with status 2" in errors[0]
    assert sorted(p.name for p in (tmp_path / "synthetic_exam").iterdir()) == [
        "runs.json", "synthetic_dataset.pdf", "synthetic_dataset.png"]
    text = (tmp_path / "README.md").read_text()
    assert "![A synthetic exam" in text and "drawn on `<tmp>/" in text and "embedded default" not in text


def test_unknown_panel_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        gallery.main(["--only", "nope"])
    assert "--only: unknown ['nope']; valid:" in capsys.readouterr().err
