"""How far each boxed finding stands out of the breast texture at the model's input size, against
the brightest normal spot of a finding-free image.

``python -m analyses.lesion_contrast [--data ROOT] [--image-size 256 160]`` preprocesses every image
as the models see it and measures a contrast-to-noise ratio (CNR): the mean of a disc of radius
``r / 2`` minus the mean of the ring ``1.2 r .. 2 r`` around it, over the ring's standard deviation,
with ``r = sqrt(box area) / 2`` and only breast pixels counted in the ring. Each box is measured at its
centre. The null is the same statistic in images without any box: at random breast points (a lesion
is about as bright as normal tissue there) and at the image's maximum (the brightest normal lump a
detector has to beat). Writes ``REPORT_DIR/lesion_contrast.{md,csv,tex}``.

An image-level classifier must rank a finding above the brightest lump of every normal image, so a
category whose median CNR sits near the null maximum cannot be learned from brightness alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models  # noqa: F401  (runtime set-up first)
import numpy as np
import pandas as pd
from scipy.signal import fftconvolve
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from models.cli import parse_command, run_main
from models.data.default import default_data_root
from models.data.dicom import read_dicom
from models.data.errors import DataError
from models.data.preprocess import PreprocessConfig, preprocess_image
from models.data.reading import ReadOptions, read_options_field
from models.data.sources import read_table
from models.report_tables import write_table
from models.run_options import progress_field, seed_field

BREAST_LEVEL = 0.02  # preprocessed pixels above this are breast (the background is 0)
CORE, RING = 0.5, (1.2, 2.0)  # disc and ring radii as multiples of r


@dataclass(frozen=True)
class LesionContrastConfig:
    data: str | None = field(default=None, metadata={"help": "dataset folder; default: the synthetic set"})
    reading: ReadOptions = read_options_field()
    image_size: tuple[int, ...] = field(default=(256, 160), metadata={"help": "input H W, as the models see it"})
    null_radius: float = field(default=10.0, metadata={
        "help": "r (px at the input size) of the null statistic in finding-free images; the default is "
                "about the median mass box's at 256 x 160"})
    null_points: int = field(default=20, metadata={"help": "random breast points per finding-free image"})
    max_images: int | None = field(default=None, metadata={"help": "read at most this many images"})
    seed: int = seed_field("null points")
    report_dir: str = field(default="reports/data", metadata={"help": "where the table goes"})
    progress: bool = progress_field()


def _disc(radius: float) -> np.ndarray:
    half = int(np.ceil(radius))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return np.hypot(xx, yy)


def contrast_to_noise_map(image: np.ndarray, radius: float) -> np.ndarray:
    """CNR (see module docstring) centred on every pixel of a preprocessed ``(H, W)`` image in [0, 1];
    NaN where the ring holds fewer than 5 breast pixels."""
    distance = _disc(RING[1] * radius)
    core = (distance < max(CORE * radius, 1.0)).astype(float)
    ring = ((distance > RING[0] * radius) & (distance < RING[1] * radius)).astype(float)
    breast = (image > BREAST_LEVEL).astype(float)

    def conv(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return fftconvolve(values, kernel, mode="same")

    core_mean = conv(image, core) / core.sum()
    count = np.round(conv(breast, ring))
    with np.errstate(invalid="ignore", divide="ignore"):
        ring_mean = conv(image * breast, ring) / count
        ring_var = conv(image**2 * breast, ring) / count - ring_mean**2
        cnr = (core_mean - ring_mean) / (np.sqrt(np.clip(ring_var, 0, None)) + 1e-6)
    cnr[count < 5] = np.nan
    return cnr


def measure(config: LesionContrastConfig, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-box CNRs ``(category, density, view, cnr)`` and finding-free nulls ``(kind, density, cnr)``
    of the dataset at ``root``."""
    table = read_table(root, config.reading)
    if config.max_images is not None:
        table = table.iloc[:config.max_images]
    preprocess = PreprocessConfig(size=tuple(config.image_size))
    rng = np.random.default_rng(config.seed)
    boxes, nulls = [], []
    for row in tqdm(table.itertuples(), total=len(table), desc="measuring", disable=not config.progress):
        raw = [box[:4] for box in row.boxes] or None
        image, _, scaled = preprocess_image(read_dicom(row.path).pixels, preprocess, raw, row.laterality)
        if row.boxes:
            for box, (x0, y0, x1, y1) in zip(row.boxes, scaled):
                radius = 0.5 * np.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))
                cy = int(np.clip((y0 + y1) / 2, 0, image.shape[0] - 1))
                cx = int(np.clip((x0 + x1) / 2, 0, image.shape[1] - 1))
                boxes.append((box.category, row.density, row.view, contrast_to_noise_map(image, radius)[cy, cx]))
            continue
        cnr = contrast_to_noise_map(image, config.null_radius)
        inside = np.flatnonzero((image > BREAST_LEVEL).ravel() & np.isfinite(cnr).ravel())
        if len(inside):
            nulls += [("random point", row.density, v) for v in cnr.ravel()[rng.choice(inside, config.null_points)]]
            nulls.append(("image maximum", row.density, float(np.nanmax(cnr.ravel()[inside]))))
    box_frame = pd.DataFrame(boxes, columns=["category", "density", "view", "cnr"]).dropna()
    return box_frame, pd.DataFrame(nulls, columns=["kind", "density", "cnr"])


def summarize(boxes: pd.DataFrame, nulls: pd.DataFrame) -> pd.DataFrame:
    """One row per null kind and per category: count, CNR percentiles, the share of boxes above the
    median image maximum, and the AUROC of box CNR against random points."""
    points = nulls.loc[nulls["kind"] == "random point", "cnr"].to_numpy()
    brightest = float(nulls.loc[nulls["kind"] == "image maximum", "cnr"].median())
    rows = []
    for kind, group in nulls.groupby("kind", sort=False):
        values = group["cnr"].to_numpy()
        rows.append({"what": f"finding-free image, {kind}", "n": len(values),
                     **_percentiles(values), "above brightest normal lump": float(np.mean(values > brightest)),
                     "AUROC vs random points": None})
    order = boxes["category"].value_counts().index
    for category in order:
        values = boxes.loc[boxes["category"] == category, "cnr"].to_numpy()
        auroc = roc_auc_score(np.r_[np.ones(len(values)), np.zeros(len(points))], np.r_[values, points])
        rows.append({"what": category, "n": len(values), **_percentiles(values),
                     "above brightest normal lump": float(np.mean(values > brightest)),
                     "AUROC vs random points": float(auroc)})
    return pd.DataFrame(rows)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    return {f"CNR p{q}": float(np.percentile(values, q)) for q in (10, 50, 90)}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_command(LesionContrastConfig, argv, prog="python -m analyses.lesion_contrast",
                          description=__doc__.splitlines()[0])
    root = default_data_root(config.data, progress=config.progress)
    boxes, nulls = measure(config, root)
    if boxes.empty or nulls.empty:
        raise DataError(root, f"{len(boxes)} boxes and {len(nulls)} finding-free measurements",
                        "images with boxes and images without any")
    frame = summarize(boxes, nulls)
    write_table(frame.round(3), f"{config.report_dir}/lesion_contrast",
                caption=f"Lesion contrast-to-noise at {config.image_size[0]} x {config.image_size[1]}")
    print(frame.round(3).to_string(index=False))
    return frame


if __name__ == "__main__":
    run_main(main)
