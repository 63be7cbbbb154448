"""Per-view saliency for exam-level CLIP models: ``python -m mammo_interp.saliency --exam STUDY_ID``.

One exam's 2 x 2 figure (``--exam``) and/or a split's evaluation (``--evaluate``): which view and
breast the attributions of the pooled exam score point at (view identification against the
lesion-bearing view, with the view-averaged Grad-CAM baseline and chance), localization of each
per-view map under the heatmap -> box rule, and per-breast detection. The attribution itself, for a
user's own exam model too, is :mod:`mammo_interp.per_view`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import models  # noqa: F401 - runtime guard before torchvision/transformers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mammo_interp import methods as registry
from mammo_interp.boxes import BoxRule
from mammo_interp.features import breast_mask
from mammo_interp.heatmaps import upsample
from mammo_interp.methods import MethodContext
from mammo_interp.methods.cams import GRADCAM
from mammo_interp.localization import evaluate_methods, write_localization_table
from mammo_interp.per_view import (ATTRIBUTION_NAMES, EMPTY_VALUES, SIDES, SLOTS, ExamTarget, exam_model,
                                   normalize_views, side_embeddings, view_attributions, view_averaged_cam,
                                   view_grad_cam, view_maps, view_predictions)
from mammo_interp.view_evaluation import (ExamExplanation, detection_results, identification_results,
                                          localization_inputs, views_frame)
from mammo_interp.plotting import (CATEGORY_COLORS, DEFAULT_COLOR, draw_boxes, heat_colorbar, heat_overlay, legend_handles,
                                   save_figure, styled)
from models.checkpoints import check_input_size
from models.cli import parse_command, run_main
from models.clip import attribute_embedding
from models.data.datasets import ExamDataset
from models.data.errors import DataError
from models.data.reading import ReadOptions, read_options_field
from models.data.schema import FINDING_CATEGORIES
from models.data.sources import TEST, TRAIN, VALIDATION, load_splits, preprocess_cache
from models.default_model import checkpoint_field, checkpoint_name, open_checkpoint
from models.device import Precision, check_spelling, resolve_device
from models.errors import check_choice
from models.io import atomic_write, save_json
from models.metrics import Estimate
from models.run_options import device_field, n_boot_field, precision_field, progress_field, seed_field, threads_field
from models.text import attribute_category, finding_index

AVERAGED = "view-averaged Grad-CAM (baseline)"


@dataclass(frozen=True)
class SaliencyConfig:
    """One per-view saliency run: one exam's figure (``exam``) and/or a split's evaluation."""

    exam: str | None = field(default=None, metadata={"help": "study id to explain (2x2 figure)"})
    evaluate: bool = field(default=False, metadata={
        "help": "evaluate view identification and localization over --split"})
    attribute: str = field(default="mass", metadata={"help": "finding category, e.g. mass, calcification"})
    data: str | None = field(default=None, metadata={"help": "dataset folder; default: the synthetic set"})
    reading: ReadOptions = read_options_field()
    checkpoint: str | None = checkpoint_field()
    text_encoder: str | None = field(default=None, metadata={"help": "text-model folder (Mammo-CLIP)"})
    layer: str | None = field(default=None, metadata={"help": "Grad-CAM layer; default: the checkpoint's"})
    image_size: tuple[int, ...] = field(default=(), metadata={
        "help": "input H W; default: the size the checkpoint was pretrained at"})
    split: str = field(default=TEST, metadata={"help": f"split to evaluate: {TRAIN}, {VALIDATION}, {TEST}"})
    methods: tuple[str, ...] = field(default=("gradcam",), metadata={
        "help": lambda: f"per-view map methods, gradcam among them; registered: {registry.help_text(per_view=True)}"})
    figure_method: str = field(default="gradcam", metadata={"help": "map drawn in the exam figure"})
    joint: bool = field(default=True, metadata={
        "help": "exam figure: Grad-CAM normalized jointly over the views (else per view)"})
    empty: str = field(default="blank", metadata={"help": f"Shapley value of no view: {EMPTY_VALUES}"})
    ig_steps: int = field(default=8, metadata={"help": "Integrated Gradients steps"})
    ig_batch: int = field(default=1, metadata={"help": "IG exam-steps per forward pass"})
    occlusion_window: int = field(default=64, metadata={"help": "occlusion window (px)"})
    occlusion_stride: int = field(default=32, metadata={"help": "occlusion stride (px)"})
    max_exams: int = field(default=0, metadata={"help": "evaluate at most this many exams (0: all)"})
    device: str = device_field()
    threads: int = threads_field()
    precision: str = precision_field()
    box: BoxRule = field(default_factory=BoxRule, metadata={"help": "heatmap -> boxes rule"})
    figure_cases: int = field(default=2, metadata={"help": "exam figures written by --evaluate"})
    report_dir: str = field(default="reports/per_view", metadata={"help": "tables and figures"})
    n_boot: int = n_boot_field()
    validation_fraction: float = field(default=0.1, metadata={"help": "training studies held out"})
    seed: int = seed_field("splits, tie-breaking, bootstrap")
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        registry.check(self.methods, per_view=True, has=("text",))
        if GRADCAM.name not in self.methods:  # the baseline is Grad-CAM's, and so are the per-view-norm rows
            raise ValueError(f"--methods must include gradcam; got {' '.join(self.methods)}")
        if self.figure_method not in self.methods:
            raise ValueError(f"figure_method {self.figure_method!r} is not among methods {list(self.methods)}")
        check_choice("empty", self.empty, EMPTY_VALUES)
        check_choice("split", self.split, (TRAIN, VALIDATION, TEST))
        check_input_size(self.image_size)
        check_spelling(self.device, self.precision)


class SaliencyStudy:
    """Model, data and settings of one :class:`SaliencyConfig`."""

    def __init__(self, config: SaliencyConfig) -> None:
        self.config = config
        self.category, self.category_index = finding_index(config.attribute)
        self.splits = load_splits(config.data, config.validation_fraction, config.seed, config.progress,
                                  config.reading)
        self.checkpoint, payload, self.image_size = open_checkpoint(config.checkpoint, config.data,
                                                                    config.image_size, config.progress,
                                                                    config.device, config.precision)
        self.model = exam_model(payload, str(self.checkpoint), config.text_encoder)
        encoder = self.model.clip.image_encoder
        self.layer = config.layer or encoder.config.feature_layer
        self.layer_module = encoder.feature_module(self.layer)
        self.target = ExamTarget(self.model, attribute_embedding(self.model.clip, config.attribute))
        self.sides = side_embeddings(self.model.clip, config.attribute)
        self.device = resolve_device(config.device)
        self.precision = Precision.resolve(config.precision, self.device)
        self.target.to(self.device)  # the model with it
        self.sides = {side: embedding.to(self.device) for side, embedding in self.sides.items()}
        self.slug = self.category.lower().replace(" ", "_")
        self.context = MethodContext(text_embedding=self.target.text_embedding, seed=config.seed,
                                     ig_steps=config.ig_steps, ig_internal_batch=config.ig_batch,
                                     occlusion_window=config.occlusion_window,
                                     occlusion_stride=config.occlusion_stride)

    def dataset(self, split: str | None = None, table: pd.DataFrame | None = None) -> ExamDataset:
        table = self.splits[split or self.config.split] if table is None else table
        return ExamDataset(table, cache=preprocess_cache(self.image_size))

    def find_exam(self, study_id: str) -> dict[str, Any]:
        for split in (TEST, VALIDATION, TRAIN):
            table = self.splits[split]
            rows = table[table["study_id"].astype(str) == str(study_id)]
            if len(rows):
                return self.dataset(table=rows)[0]
        raise DataError(self.splits.root, f"no study {study_id!r}", "a study_id of the dataset")

    def explain(self, item: Mapping[str, Any]) -> ExamExplanation:
        """Per-view maps, the baseline, view attributions and predictions of one exam item."""
        with self.precision.autocast():
            return self._explain(item)

    def _explain(self, item: Mapping[str, Any]) -> ExamExplanation:
        config = self.config
        images, mask = item["image"][None].to(self.device), item["mask"][None].to(self.device)
        present = item["mask"]
        numpy_images = item["image"][:, 0].numpy()
        masks = torch.from_numpy(np.stack([breast_mask(im) if p else np.zeros(im.shape, bool)
                                           for im, p in zip(numpy_images, present.tolist())]))
        size = tuple(masks.shape[1:])
        cams = view_grad_cam(self.target, images, mask, self.layer_module)[0]  # pre-ReLU: the baseline's
        raw = {GRADCAM.label: upsample(cams.clamp(min=0), size)}  # the registered Grad-CAM (its ReLU)
        for method in (registry.get(name) for name in config.methods if name != GRADCAM.name):
            values = view_maps(method, self.context, self.target, images, mask, self.layer_module)[0]
            raw[method.label] = upsample(values, size) if method.resolution == "layer" else values
        maps: dict[str, torch.Tensor] = {}
        views: dict[str, np.ndarray] = {}
        for name, values in raw.items():
            maps[f"{name} per view, joint norm"] = normalize_views(values, masks, present, joint=True)
            views[f"{name} peak, joint norm"] = _peaks(maps[f"{name} per view, joint norm"], present)
        per_view = normalize_views(raw[GRADCAM.label], masks, present, joint=False)
        maps["Grad-CAM per view, per-view norm"] = per_view
        views["Grad-CAM peak, per-view norm"] = _peaks(per_view, present)
        averaged = upsample(view_averaged_cam(cams[None], present[None])[0][None], size).expand(len(present), -1, -1)
        maps[AVERAGED] = normalize_views(averaged.contiguous(), masks, present, joint=False)
        views[AVERAGED] = _peaks(maps[AVERAGED], present)
        attributions = view_attributions(self.target, images, mask, config.empty)
        for key, name in ATTRIBUTION_NAMES.items():
            values = attributions[key][0].numpy().copy()
            values[~present.numpy()] = math.nan  # never chosen; the attribution itself is 0
            views[name] = values
        predictions = view_predictions(self.target, attributions["features"], mask, self.sides)
        views["per-view prediction"] = predictions["view"][0].numpy()
        return ExamExplanation(
            str(item["study_id"]), numpy_images, present.numpy(), masks.numpy(),
            [b.numpy().reshape(-1, 4) for b in item["boxes"]], [b.numpy() for b in item["box_labels"]],
            list(item["image_id"]), list(item["transform"]), float(predictions["exam"][0]), maps, views,
            predictions["breast"][0].numpy())

    @styled
    def figure(self, explanation: ExamExplanation, path: str | Path) -> list[Path]:
        """2 x 2 panels in slot order (R-CC, L-CC / R-MLO, L-MLO): map (opacity rising with heat,
        one colorbar), GT boxes, each view's contributions."""
        method = registry.get(self.config.figure_method).label
        joint = self.config.joint or method != "Grad-CAM"  # only Grad-CAM is kept both ways
        key = f"{method} per view, {'joint' if joint else 'per-view'} norm"
        heat = explanation.maps[key].numpy()
        shapley = np.nan_to_num(explanation.views["Shapley"])
        total = np.abs(shapley).sum() or 1.0
        fig, axes = plt.subplots(2, 2, figsize=(4.6, 6.4))
        mappable, shown = None, set()
        for slot, ax in enumerate(axes.ravel()):
            ax.set_xticks([])
            ax.set_yticks([])
            if not explanation.present[slot]:
                ax.set_title(f"{SLOTS[slot]}: missing")
                ax.imshow(np.zeros_like(explanation.images[slot]), cmap="gray", vmin=0, vmax=1)
                continue
            mappable = heat_overlay(ax, explanation.images[slot], heat[slot])
            labels = [FINDING_CATEGORIES[i] for i in explanation.box_labels[slot]]
            draw_boxes(ax, explanation.boxes[slot], labels, linewidth=1.2)
            shown.update(labels)
            ax.set_title(f"{SLOTS[slot]}  Shapley {shapley[slot]:+.4f} ({shapley[slot] / total:+.0%})\n"
                         f"LOO {explanation.views['leave-one-view-out'][slot]:+.4f}  "
                         f"view score {explanation.views['per-view prediction'][slot]:.3f}", fontsize=6)
        if mappable is not None:
            heat_colorbar(fig, axes, mappable, f"{key} (0–1)")
        if shown:  # which finding each box colour is
            colors = {c: CATEGORY_COLORS.get(c, DEFAULT_COLOR) for c in sorted(shown)}
            fig.legend(handles=legend_handles(colors), loc="outside lower center", ncols=min(3, len(colors)),
                       frameon=False, title="ground-truth boxes")
        right, left = explanation.breasts
        fig.suptitle(f"exam {explanation.study_id[:12]}: cos(exam, {self.category}) = "
                     f"{explanation.exam_score:.3f}; breast R {right:.3f} / L {left:.3f}; ground-truth boxes")
        return save_figure(fig, path)

    def explain_split(self) -> list[ExamExplanation]:
        dataset = self.dataset()
        count = len(dataset) if self.config.max_exams <= 0 else min(self.config.max_exams, len(dataset))
        return [self.explain(dataset[i])
                for i in tqdm(range(count), desc=f"exams {self.config.split}", disable=not self.config.progress)]

    def evaluate(self) -> dict[str, Any]:
        """View identification, localization and detection tables plus per-view CSV and figures."""
        config = self.config
        started = time.perf_counter()
        explained = self.explain_split()
        seconds = time.perf_counter() - started
        report = Path(config.report_dir)
        stem = report / self.slug
        identification, eligible = identification_results(explained, self.category_index, config.n_boot,
                                                          config.seed)
        where = (f"{config.split} split, {self.model.clip.image_encoder.config.name} layer {self.layer} at "
                 f"{self.image_size[0]}x{self.image_size[1]}, {self.model.pooling.kind} view pooling, "
                 f"checkpoint {self.checkpoint.name}; 95% bootstrap CIs ({config.n_boot} resamples)")
        written = write_localization_table(
            identification, f"{stem}_view_identification",
            f"{self.category}: top view / top breast by attribution is the lesion-bearing one, over "
            f"{len(eligible)} exams with the finding in exactly one breast; {where}",
            f"tab:view-id-{self.slug}")
        features, heatmaps = localization_inputs(explained)
        localization, _ = evaluate_methods(heatmaps, features, self.category_index, config.box,
                                           config.n_boot, config.seed)
        n_pos = int(features.has_category(self.category_index).sum())
        written += write_localization_table(
            localization, f"{stem}_localization",
            f"{self.category} localization of per-view maps vs the view-averaged map, all {len(features)} "
            f"present views ({n_pos} with the finding), quantile {config.box.quantile}, at most "
            f"{config.box.max_boxes} boxes; {where}", f"tab:view-loc-{self.slug}")
        detection = detection_results(explained, self.category_index, config.n_boot, config.seed)
        written += write_localization_table(
            detection, f"{stem}_detection",
            f"{self.category}: AUROC of the exam score vs per-breast scores; {where}", f"tab:view-det-{self.slug}")
        frame = views_frame(explained, self.category_index).to_csv(index=False).encode()
        written.append(atomic_write(f"{stem}_views.csv", lambda s: s.write(frame)))
        for index in eligible[:config.figure_cases]:
            written += self.figure(explained[index], f"{stem}_exam_{explained[index].study_id[:12]}")
        summary = {"config": asdict(config), "checkpoint": checkpoint_name(self.checkpoint), "layer": self.layer,
                   "image_size": list(self.image_size), "category": self.category, "exams": len(explained),
                   "eligible_exams": len(eligible), "views": len(features), "views_with_finding": n_pos,
                   "explain_seconds": seconds, "threads": torch.get_num_threads(),
                   "identification": _plain(identification), "localization": _plain(localization),
                   "detection": _plain(detection), "files": [str(p) for p in written]}
        save_json(f"{stem}_summary.json", summary)
        return summary


def _peaks(maps: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    """``(V,)`` maximum of each normalized map; NaN for missing views."""
    peaks = maps.flatten(1).amax(dim=1).double().numpy()
    peaks[~present.numpy()] = math.nan
    return peaks


def _plain(results: Mapping[str, Mapping[str, Estimate]]) -> dict[str, dict[str, dict[str, float]]]:
    return {m: {k: asdict(e) for k, e in r.items()} for m, r in results.items()}


def run(config: SaliencyConfig) -> dict[str, Any]:
    """The exam figure (``config.exam``) and/or the split evaluation (``config.evaluate``)."""
    study = SaliencyStudy(config)
    result: dict[str, Any] = {}
    if config.exam is not None:
        explanation = study.explain(study.find_exam(config.exam))
        stem = Path(config.report_dir) / f"exam_{config.exam}_{study.slug}"
        files = study.figure(explanation, stem)
        frame = pd.DataFrame({"slot": SLOTS, "present": explanation.present,
                              **{k: v for k, v in explanation.views.items()}})
        files.append(atomic_write(f"{stem}_views.csv", lambda s: s.write(frame.to_csv(index=False).encode())))
        result["exam"] = {"study_id": explanation.study_id, "exam_score": explanation.exam_score,
                          "breasts": dict(zip(SIDES, explanation.breasts.tolist())),
                          "views": frame, "files": [str(p) for p in files]}
    if config.evaluate:
        result["evaluation"] = study.evaluate()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_command(
        SaliencyConfig, argv, "python -m mammo_interp.saliency",
        "Per-view saliency for exam-level CLIP models: attribute the pooled exam score to each view "
        "(Grad-CAM, Integrated Gradients, occlusion maps; gradient x input, leave-one-view-out, exact "
        "Shapley), compare with the view-averaged map, and score views and breasts separately.")
    if config.exam is None and not config.evaluate:
        raise SystemExit("python -m mammo_interp.saliency: error: give --exam STUDY_ID and/or --evaluate")
    try:
        attribute_category(config.attribute)
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {config.checkpoint}: no such file")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"python -m mammo_interp.saliency: error: {exc}") from exc
    result = run(config)
    if "exam" in result:
        exam = result["exam"]
        breasts = ", ".join(f"{side} {score:.3f}" for side, score in exam["breasts"].items())
        print(f"study {exam['study_id']}: exam score {exam['exam_score']:.3f}; breast scores {breasts}")
        print(exam["views"].to_string(index=False))
    if "evaluation" in result:
        evaluation = result["evaluation"]
        for method, metrics in evaluation["identification"].items():
            print(f"{method}: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in metrics.items()))
        print(f"{evaluation['eligible_exams']} of {evaluation['exams']} exams eligible; "
              f"files: {evaluation['files'][0]} ...")
    return result


if __name__ == "__main__":
    run_main(main)
