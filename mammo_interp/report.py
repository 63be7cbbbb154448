"""Report generation as a chain of zero-shot tasks, with abstention: ``python -m mammo_interp.report``.

MMG-CLIP (seed 001, section 4.6, Figure 5) writes a draft report as a sequence of zero-shot
classifications: is there a finding (mass, calcification)? A mass leads on to malignancy, shape and
margins; then BI-RADS and architectural distortion; "no findings" ends the finding track. Its stated
limitation is the decision rule: the argmax cannot tell a confident answer from near-equal
probabilities. Here every field has a **confidence threshold**: a field whose top probability is
below ``--threshold`` is reported as "uncertain" instead of the argmax (threshold 0 = the seed's
argmax; 1 abstains on every field whose top probability is below 1). A field gated on a finding
(:data:`CHAIN`) is asked only when that finding was answered "present"; an uncertain or absent
finding leaves its detail fields unasked, so an early mistake is not elaborated into a confident
wrong description. Mass and calcification are two binary tasks, so a breast can have both.

Per item (default: breast) the structured report is one row (answer, top probability, ground truth
per field); each exam gets a list of sentences. Contrastive prompt sets (a class against its own
negation, e.g. BI-RADS in ``cxr_clip``) are renormalized over classes so that every field's top
probability is a probability over its classes.

Evaluation per field against the labels (:func:`mammo_interp.zeroshot.level_targets`), on the items
the chain asked that have a known target: coverage (share answered) and accuracy on the answered
items with bootstrap 95 % CIs, the argmax accuracy on the same items and the majority-class share.
The accuracy-vs-coverage curve sweeps the threshold per field on every item with a known target
(no gating), one line per field. Writes ``REPORT_DIR/{level}_{split}_t{threshold}`` (0.6 as ``t0p6``) + ``_fields``
(md, CSV, LaTeX), ``_structured.csv``/``.json``, ``_exams.json``/``.md``, ``_coverage`` (PNG, PDF,
CSV) and a JSON record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import models  # noqa: F401 - runtime guard before torch/timm/transformers
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mammo_interp.plotting import plt, save_figure, styled
from mammo_interp.prompts import PromptSet, load_prompt_sets, prompt_set_for
from mammo_interp.zero_shot_classifier import ENSEMBLES, ZeroShotClassifier
from mammo_interp.zeroshot import LEVELS, SplitConfig, embed_split, level_targets
from models.cli import parse_command, run_main
from models.data.labels import IGNORE_INDEX
from models.errors import check_choice
from models.io import atomic_write, save_json
from models.metrics import Estimate, bootstrap
from models.report_tables import write_table
from models.text import SIDE_WORDS

ABSTAIN = -1  # the field was asked, its top probability was below the threshold
NOT_ASKED = -2  # the chain did not reach the field (its gating finding was not answered "present")
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class ReportField:
    """One zero-shot task of the chain; asked only if one of ``gate`` (binary finding fields, earlier
    in the chain) was answered "present" (class 1). No gate: always asked."""

    task: str
    gate: tuple[str, ...] = ()


CHAIN = (
    ReportField("mass"),
    ReportField("calcification"),
    ReportField("malignancy", gate=("mass", "calcification")),
    ReportField("mass_shape", gate=("mass",)),
    ReportField("mass_margin", gate=("mass",)),
    ReportField("architectural_distortion"),
    ReportField("birads"),
)
FIELDS = tuple(f.task for f in CHAIN)


@dataclass(frozen=True)
class ReportConfig(SplitConfig):
    """Draft reports for one split at one level, and their evaluation."""

    level: str = field(default="breast", metadata={"help": f"{LEVELS}: one structured row per item"})
    threshold: float = field(default=0.6, metadata={
        "help": "a field whose top probability is below this is reported as uncertain (0 = argmax)"})
    prompt_set: str | None = field(default=None, metadata={
        "help": "prompt set for the tasks it covers; others (and default): the first set covering them"})
    prompt_file: str | None = field(default=None, metadata={"help": "prompt-set JSON; default: packaged"})
    ensemble: str = field(default="embedding", metadata={"help": f"{ENSEMBLES} prompt ensembling"})
    report_dir: str = field(default="reports/report_generation", metadata={"help": "where outputs go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("ensemble", self.ensemble, ENSEMBLES)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")


# --- decisions -------------------------------------------------------------------------------


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(G,)`` argmax of ``(G, C)`` probabilities, :data:`ABSTAIN` where the top one is below
    ``threshold``."""
    probs = np.asarray(probs, dtype=float)
    return np.where(probs.max(axis=1) >= threshold, probs.argmax(axis=1), ABSTAIN)


def run_chain(probs: Mapping[str, np.ndarray], threshold: float,
              chain: Sequence[ReportField] = CHAIN) -> dict[str, np.ndarray]:
    """Per field ``(G,)`` class indices, :data:`ABSTAIN` or :data:`NOT_ASKED`, following ``chain``.

    ``probs`` maps each field to ``(G, C)`` probabilities of the same ``G`` items.
    """
    answers: dict[str, np.ndarray] = {}
    for step in chain:
        answer = decide(probs[step.task], threshold)
        if step.gate:
            unknown = [g for g in step.gate if g not in answers]
            if unknown:
                raise ValueError(f"{step.task} is gated on {unknown}, which come later in the chain")
            asked = np.any([answers[g] == 1 for g in step.gate], axis=0)
            answer = np.where(asked, answer, NOT_ASKED)
        answers[step.task] = answer
    return answers


def item_sentences(answers: Mapping[str, int], class_names: Mapping[str, Sequence[str]]) -> list[str]:
    """The report sentences of one item from its per-field answers (class index, ABSTAIN, NOT_ASKED).

    Fields not asked produce no sentence: without a mass there is no shape, margin or (without a
    calcification either) malignancy statement.
    """
    get = lambda task: answers.get(task, NOT_ASKED)  # noqa: E731
    mass, calcification = get("mass"), get("calcification")
    out = []
    if mass == 0 and calcification == 0:
        out.append("No mass or suspicious calcification is seen.")
    else:
        out += _finding(mass, "A mass is seen.", "No mass is seen.", "Whether a mass is present is uncertain.")
        for task, noun, verb in (("mass_shape", "mass shape", "is"), ("mass_margin", "mass margins", "are")):
            if get(task) != NOT_ASKED:
                value = UNCERTAIN if get(task) == ABSTAIN else class_names[task][get(task)]
                out.append(f"The {noun} {verb} {value}.")
        out += _finding(calcification, "Suspicious calcifications are seen.",
                        "No suspicious calcifications are seen.",
                        "Whether suspicious calcifications are present is uncertain.")
    out += _finding(get("malignancy"), "The findings are suggestive of malignancy.",
                    "The findings appear benign.", "Whether the findings are malignant is uncertain.")
    out += _finding(get("architectural_distortion"), "Architectural distortion is present.",
                    "No architectural distortion is seen.", "Architectural distortion is uncertain.")
    if get("birads") >= 0:
        out.append(f"Assessment: {class_names['birads'][get('birads')]}.")
    elif get("birads") == ABSTAIN:
        out.append("The BI-RADS assessment is uncertain.")
    return out


def _finding(answer: int, present: str, absent: str, uncertain: str) -> list[str]:
    return {1: [present], 0: [absent], ABSTAIN: [uncertain]}.get(answer, [])


# --- evaluation ------------------------------------------------------------------------------


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p))


def _share(flags: np.ndarray, _: np.ndarray) -> float:
    return float(np.mean(flags))


def evaluate_field(probs: np.ndarray, answers: np.ndarray, targets: np.ndarray, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Estimate | int | float]:
    """Coverage and accuracy of one field's ``(G,)`` answers against ``(G,)`` targets, on the items
    the chain asked with a known target; ``argmax_accuracy`` of ``(G, C)`` probs on the same items."""
    asked = (answers != NOT_ASKED) & (targets != IGNORE_INDEX)
    answered = asked & (answers >= 0)
    nan = Estimate(np.nan, np.nan, np.nan, 0)
    y, argmax = targets[asked], np.asarray(probs).argmax(axis=1)[asked]
    return {
        "asked": int(asked.sum()), "answered": int(answered.sum()),
        "coverage": bootstrap(_share, answered[asked], y, n_boot, seed) if asked.any() else nan,
        "accuracy": (bootstrap(_accuracy, targets[answered], answers[answered], n_boot, seed)
                     if answered.any() else nan),
        "argmax_accuracy": bootstrap(_accuracy, y, argmax, n_boot, seed) if asked.any() else nan,
        "majority": float(np.bincount(y).max() / len(y)) if asked.any() else np.nan,
    }


def coverage_curve(probs: np.ndarray, targets: np.ndarray, thresholds: Sequence[float]) -> pd.DataFrame:
    """Per threshold: ``coverage`` and ``accuracy`` (on answered items; NaN when none) of
    :func:`decide` over the items with a known target."""
    known = targets != IGNORE_INDEX
    probs, targets = np.asarray(probs)[known], targets[known]
    records = []
    for t in thresholds:
        answer = decide(probs, t)
        answered = answer >= 0
        records.append({"threshold": float(t), "n": len(targets),
                        "coverage": float(answered.mean()) if len(targets) else np.nan,
                        "accuracy": _accuracy(targets[answered], answer[answered]) if answered.any() else np.nan})
    return pd.DataFrame(records)


@styled
def plot_coverage(curves: pd.DataFrame, threshold: float, title: str) -> Figure:
    """Accuracy on answered items against coverage, one line per field; dots at ``threshold``."""
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    fields = list(dict.fromkeys(curves["field"]))
    for name, color in zip(fields, sns.color_palette("colorblind", len(fields)).as_hex()):
        curve = curves[curves["field"] == name]
        at = curve.iloc[(curve["threshold"] - threshold).abs().argsort()[:1]]  # no dot: nothing answered
        curve = curve.dropna(subset=["accuracy"])
        ax.plot(curve["coverage"], curve["accuracy"], color=color, lw=1.4, label=name.replace("_", " "))
        ax.scatter(at["coverage"], at["accuracy"], color=color, s=18, zorder=3)
    ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("coverage (share of items answered)")
    ax.set_ylabel("accuracy on answered items")
    ax.set_title(f"{title}\n(dots: threshold {threshold:g})")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.grid(alpha=0.3)
    return fig


# --- the study -------------------------------------------------------------------------------


def field_prompts(sets: Mapping[str, PromptSet], name: str | None) -> dict[str, PromptSet]:
    """Per chain field the prompt set used: ``name`` where it covers the task, else the first set
    that does."""
    return {task: prompt_set_for(sets, task, name if name in sets and task in sets[name].tasks else None)
            for task in FIELDS}


@dataclass(frozen=True)
class ReportRun:
    """The field table, per-item structured rows, per-exam sentences and the coverage curves."""

    fields: pd.DataFrame
    structured: pd.DataFrame
    exams: dict[str, list[str]]
    curves: pd.DataFrame


def _item_label(level: str, side: str | None, view: str | None) -> str:
    if level == "exam":
        return ""
    words = [SIDE_WORDS.get(side or "", "").capitalize() or "Unknown side",
             "breast" if level == "breast" else (view or "view")]
    return " ".join(words)


def generate(config: ReportConfig) -> ReportRun:
    """Run ``config``: zero-shot every field, follow the chain, write and evaluate the reports."""
    sets = field_prompts(load_prompt_sets(config.prompt_file), config.prompt_set)
    split = embed_split(config)
    embedded, table = split.embedded, split.table
    probs, names, targets = {}, {}, {}
    for task, prompt_set in sets.items():
        prompts = prompt_set.tasks[task]
        raw = ZeroShotClassifier(split.model, prompts, config.ensemble).predict(
            embedded.embeddings, embedded.sides, embedded.views)
        probs[task] = raw / raw.sum(axis=1, keepdims=True)
        names[task] = prompts.class_names
        targets[task] = level_targets(table, task, embedded.rows)
    answers = run_chain(probs, config.threshold)

    table = table.reset_index(drop=True)
    studies = [str(table["study_id"].iloc[rows[0]]) for rows in embedded.rows]
    records, exams = [], {}
    for g, rows in enumerate(embedded.rows):
        item = {task: int(answers[task][g]) for task in FIELDS}
        view = str(table["view"].iloc[rows[0]]) if config.level == "image" else None
        record = {"study_id": studies[g], "side": embedded.sides[g], "view": view,
                  "image_ids": " ".join(str(table["image_id"].iloc[i]) for i in rows)}
        for task in FIELDS:
            a, t = item[task], targets[task][g]
            record[task] = "" if a == NOT_ASKED else UNCERTAIN if a == ABSTAIN else names[task][a]
            record[f"{task}_p"] = round(float(probs[task][g].max()), 4)
            record[f"{task}_truth"] = "" if t == IGNORE_INDEX else names[task][t]
        records.append(record)
        label = _item_label(config.level, embedded.sides[g], view)
        exams.setdefault(studies[g], []).extend(
            f"{label}: {s}" if label else s for s in item_sentences(item, names))
    structured = pd.DataFrame(records)

    rows_out, curves = [], []
    for task in FIELDS:
        scores = evaluate_field(probs[task], answers[task], targets[task], config.n_boot, config.seed)
        rows_out.append({"field": task, "prompts": sets[task].name, "asked": scores["asked"],
                         "answered": scores["answered"], "coverage": scores["coverage"].format(3),
                         "accuracy (answered)": scores["accuracy"].format(3),
                         "argmax accuracy": scores["argmax_accuracy"].format(3),
                         "majority": "" if np.isnan(scores["majority"]) else f"{scores['majority']:.3f}"})
        curve = coverage_curve(probs[task], targets[task], np.round(np.linspace(0, 1, 101), 2))
        curves.append(curve.assign(field=task))
    run = ReportRun(pd.DataFrame(rows_out), structured, exams, pd.concat(curves, ignore_index=True))
    _write(config, split.checkpoint, run)
    return run


def _write(config: ReportConfig, checkpoint: str, run: ReportRun) -> None:
    threshold = f"{config.threshold:g}".replace(".", "p")  # no dot: save_figure sets suffixes
    stem = Path(config.report_dir) / f"{config.level}_{config.split}_t{threshold}"
    named = lambda suffix: stem.with_name(stem.name + suffix)  # noqa: E731
    text = lambda path, content: atomic_write(path, lambda s: s.write(content.encode("utf-8")))  # noqa: E731
    where = f"{config.level} level, {config.split} split, {len(run.structured)} items"
    write_table(run.fields, named("_fields"), label=f"tab:report-{stem.name}", caption=(
        f"Zero-shot report fields ({where}), threshold {config.threshold:g}: items asked by the chain "
        f"with a known target, coverage and accuracy on answered items, argmax accuracy on the same "
        f"items; {config.n_boot}-sample bootstrap 95% CIs; checkpoint {checkpoint}"))
    text(named("_structured.csv"), run.structured.to_csv(index=False))
    text(named("_structured.json"), run.structured.to_json(orient="records", indent=1))
    text(named("_exams.json"), json.dumps(run.exams, indent=1))
    text(named("_exams.md"), "".join(f"### {study}\n\n" + "".join(f"- {s}\n" for s in sentences) + "\n"
                                     for study, sentences in run.exams.items()))
    text(named("_coverage.csv"), run.curves.to_csv(index=False))
    save_figure(plot_coverage(run.curves, config.threshold, f"Selective zero-shot report fields, {where}"),
                named("_coverage"))
    save_json(stem.with_suffix(".json"), {"config": asdict(config), "checkpoint": checkpoint,
                                          "chain": [asdict(f) for f in CHAIN],
                                          "fields": run.fields.to_dict(orient="records")})


def main(argv: list[str] | None = None) -> ReportRun:
    config = parse_command(
        ReportConfig, argv, "python -m mammo_interp.report",
        "Draft mammography reports as a chain of zero-shot tasks (seed 001) with a confidence "
        "threshold that abstains; structured rows, exam sentences, field accuracy vs coverage.",
    )
    run = generate(config)
    print(run.fields.to_string(index=False))
    return run


if __name__ == "__main__":
    run_main(main)
