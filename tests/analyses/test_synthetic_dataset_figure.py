"""The dataset figure analysis runs on a tiny dataset and writes PNG + PDF."""

from analyses.synthetic_dataset_figure import main
from models.data.synth import SynthConfig, generate_dataset


def test_figure_written(tmp_path):
    root = generate_dataset(tmp_path / "d", SynthConfig(n_studies=2, seed=1, image_height=96,
                                                        finding_prevalence=1.0), workers=1, progress=False)
    assert main(["--data", str(root), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "fig.pdf").is_file()
