"""Every figure type the toolkit draws, rendered on the embedded default data into one folder with a
page that shows them.

``python -m analyses.gallery`` runs, one after the other and each in its own process, the documented
command that draws each figure type, at a small scale (few bootstrap resamples, a few methods, the
first exams), into ``REPORT_DIR/PANEL/`` (its figures and run record kept, its small-scale tables
removed), then writes ``REPORT_DIR/README.md``: each figure with what
it shows, the command that drew it and where its full-scale version is committed. About 5 minutes on
2 CPU cores once the embedded set and its features are cached (the first run builds them). A panel
that fails is named with its command and last error line, and the others still run; ``--only`` redraws some panels and the
page keeps the others. The difficulty sweep is redrawn from its committed table (the sweep itself
trains a model per difficulty: hours).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from models.cli import parse_command, run_command, run_main
from models.errors import check_choice
from models.io import atomic_write
from models.run_options import progress_field
from models.run_record import RECORD_FILE, portable

MODEL_FLAGS = ("data", "checkpoint")  # passed on to every panel that reads the model and data
KEPT = {".png", ".pdf"}  # a panel keeps its figures and runs.json: its small-scale tables would read as results


@dataclass(frozen=True)
class Panel:
    """One figure type: the command that draws it (``python -m MODULE ARGS --report-dir FOLDER``)."""

    name: str
    title: str
    shows: str
    module: str
    args: tuple[str, ...] = ()
    full_scale: str = ""  # the committed full-scale version, relative to the repository (none: "")
    reads: tuple[str, ...] = MODEL_FLAGS  # which of --data/--checkpoint the command takes

    def command(self, report_dir: Path, config: GalleryConfig) -> list[str]:
        passed = [arg for flag in self.reads if getattr(config, flag) is not None
                  for arg in (f"--{flag}", str(getattr(config, flag)))]
        return ["python", "-m", self.module, *self.args, *passed, "--report-dir", str(report_dir / self.name)]


PANELS = (
    Panel("synthetic_exam", "A synthetic exam",
          "The four views of the default set's richest exam in the radiologists' hanging, its ground-truth "
          "boxes coloured by finding and its generated report.",
          "analyses.synthetic_dataset_figure", reads=("data",), full_scale="reports/synthetic_dataset.png"),
    Panel("factor", "FActOR heatmaps, boxes and channel alignment",
          "Overlay: test images with a mass, each method's heatmap fading to clear where it is zero, its "
          "predicted boxes against the ground truth. Channel scatter: each channel's alignment with the "
          "sentence against its box IoU on validation, FActOR's top-k and the oracle channel marked.",
          "mammo_interp.factor", ("--attribute", "mass", "--methods", "factor", "gradcam", "random_channels",
                                  "oracle_channel", "--n-boot", "200", "--no-progress"),
          full_scale="reports/localization/"),
    Panel("randomization", "Model-randomization check",
          "Each method's maps as the image encoder's weights are re-initialized from the top block down: "
          "a map that stays the same does not depend on what the model learned.",
          "analyses.method_checks", ("--layers", "head", "--methods", "factor", "gradcam", "layercam",
                                     "breast_prior", "--images", "8", "--n-boot", "200", "--no-progress"),
          full_scale="reports/localization/checks/", reads=("data", "checkpoint")),
    Panel("per_view", "Per-view saliency of an exam model",
          "An exam's four views with each view's saliency normalized jointly across the exam and each "
          "view's share of the exam score (Shapley, leave-one-view-out), against the view-averaged map.",
          "mammo_interp.saliency", ("--evaluate", "--max-exams", "30", "--methods", "gradcam", "layercam",
                                    "--n-boot", "200", "--no-progress"), full_scale="reports/per_view/"),
    Panel("reliability", "Zero-shot reliability",
          "Zero-shot mass probability binned against the observed frequency, with expected calibration error.",
          "mammo_interp.zeroshot", ("--n-boot", "200", "--no-progress"), full_scale="reports/zeroshot/"),
    Panel("report_coverage", "Selective report generation",
          "Per report field, the accuracy of the answered breasts against the share answered as the "
          "confidence threshold rises.",
          "mammo_interp.report", ("--n-boot", "200", "--no-progress"), full_scale="reports/report_generation/"),
    Panel("prompt_ablation", "Prompt ablation",
          "Zero-shot AUROC per task for CXR-CLIP's '{label}' / 'No {label}' prompts against sentence prompts.",
          "analyses.prompt_ablation", ("--n-boot", "200", "--no-progress"), full_scale="reports/prompt_ablation/"),
    Panel("embeddings", "t-SNE of image embeddings",
          "t-SNE of the test images' encoder and joint embeddings coloured by malignancy, BI-RADS, density "
          "and finding (ordinal labels in a sequential palette), and t-SNE dimension 1 against the zero-shot "
          "probability of malignancy.",
          "mammo_interp.embeddings", ("--n-boot", "200", "--no-progress"), full_scale="reports/embeddings/"),
    Panel("difficulty_sweep", "Learnability against generator difficulty",
          "Test AUROC of the supervised reference per finding across the generator's difficulty, redrawn "
          "from the committed sweep table.",
          "analyses.difficulty_sweep", ("--replot", "reports/reference/difficulty_sweep.csv"), reads=(),
          full_scale="reports/reference/difficulty_sweep.png"),
)


@dataclass(frozen=True)
class GalleryConfig:
    only: tuple[str, ...] = field(default=(), metadata={
        "help": f"draw only these panels (the page keeps the others): {', '.join(p.name for p in PANELS)}; "
                "default: all"})
    data: str | None = field(default=None, metadata={
        "help": "dataset folder passed to every panel that reads data; default: the embedded synthetic set"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "CLIP checkpoint passed to every panel that reads a model; default: the shipped model"})
    report_dir: str = field(default="reports/gallery", metadata={
        "help": "one folder per panel and README.md, the page that shows them"})
    progress: bool = progress_field("the panels")

    def __post_init__(self) -> None:
        check_choice("--only", list(self.only), [p.name for p in PANELS])


def draw(panels: tuple[Panel, ...], config: GalleryConfig) -> list[str]:
    """Run each panel's command; one line per failed panel: its command and its last error line."""
    report_dir = Path(config.report_dir)
    failures = []
    bar = tqdm(panels, desc="gallery", unit="panel", disable=not config.progress)
    for panel in bar:
        bar.set_postfix_str(panel.name)
        failure = run_command(panel.command(report_dir, config))
        if failure is not None:
            failures.append(f"panel {panel.name} failed with {failure}")
            continue
        for path in (report_dir / panel.name).iterdir():
            if path.is_file() and path.suffix not in KEPT and path.name != RECORD_FILE:
                path.unlink()
    return failures


def page(report_dir: Path, data: str | None = None) -> str:
    """The gallery page: each panel's figures (PNG) with what they show and the command that drew them;
    a panel not drawn yet says so."""
    where = "the embedded default data" if data is None else f"`{portable(data)}`"
    lines = ["# Figure gallery", "",
             f"Every figure type of mammo-interp, drawn on {where} at a small scale by "
             "`python -m analyses.gallery` (each panel's runs.json records its command's config and commit). "
             "Full-scale versions are linked under each panel.", ""]
    for panel in PANELS:
        lines += [f"## {panel.title}", "", panel.shows, ""]
        figures = sorted((report_dir / panel.name).glob("*.png"))
        if not figures:
            lines += ["Not drawn yet: `python -m analyses.gallery --only " + panel.name + "`.", ""]
        lines += [f"![{panel.title}: {png.stem}]({panel.name}/{png.name})" for png in figures]
        shown = " ".join(panel.command(Path(report_dir), GalleryConfig())[:-2])
        where = ""
        if panel.full_scale:
            link = Path(os.path.relpath(panel.full_scale, report_dir)).as_posix()
            where = f"; full scale: [{panel.full_scale}]({link})"
        lines += ["", f"Drawn by `{shown}`{where}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m analyses.gallery"
    config = parse_command(GalleryConfig, argv, prog, __doc__.splitlines()[0])
    panels = tuple(p for p in PANELS if not config.only or p.name in config.only)
    failures = draw(panels, config)
    index = Path(config.report_dir) / "README.md"
    atomic_write(index, lambda stream: stream.write(page(Path(config.report_dir), config.data).encode()))
    for failure in failures:
        print(f"{prog}: error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    run_main(main)
