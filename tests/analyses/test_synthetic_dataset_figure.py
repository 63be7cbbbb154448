"""The dataset figure analysis runs on a tiny dataset and writes PNG + PDF."""

from analyses.synthetic_dataset_figure import main
from models.data.synth import SynthConfig, generate_dataset


def test_figure_written(tmp_path):
    root = generate_dataset(tmp_path / "d", SynthConfig(n_studies=2, seed=1, image_height=96,
                                                        finding_prevalence=1.0), workers=1, progress=False)
    assert main(["--data", str(root), "--report-dir", str(tmp_path)]) == 0
    figure = tmp_path / "synthetic_dataset"
    assert figure.with_suffix(".png").stat().st_size > 10_000 and figure.with_suffix(".pdf").is_file()
