"""Report generation: abstention at the threshold, the chain's gating, the sentences it allows,
field evaluation and coverage curves, and the CLI on the tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammo_interp.report import (
    ABSTAIN, CHAIN, FIELDS, NOT_ASKED, ReportConfig, coverage_curve, decide, evaluate_field,
    item_sentences, main, run_chain,
)
from models.data.labels import IGNORE_INDEX

NAMES = {
    "mass": ("no mass", "mass"), "calcification": ("no calcification", "calcification"),
    "malignancy": ("benign", "malignant"), "mass_shape": ("round", "oval", "irregular", "lobulated"),
    "mass_margin": ("circumscribed", "obscured", "microlobulated", "ill-defined", "spiculated"),
    "architectural_distortion": ("no architectural distortion", "architectural distortion"),
    "birads": tuple(f"BI-RADS {k}" for k in range(1, 6)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROBS = np.array([[0.9, 0.1], [0.45, 0.55], [0.3, 0.7], [0.5, 0.5]])


def test_threshold_zero_is_argmax_one_abstains_everything():
    assert decide(PROBS, 0.0).tolist() == PROBS.argmax(axis=1).tolist()
    assert decide(PROBS, 1.0).tolist() == [ABSTAIN] * 4
    # top probabilities .9, .55, .7, .5 against 0.6: answer the first and third only
    assert decide(PROBS, 0.6).tolist() == [0, ABSTAIN, 1, ABSTAIN]
    assert decide(PROBS, 0.7).tolist() == [0, ABSTAIN, 1, ABSTAIN]  # at the threshold: answered
    three = np.array([[0.4, 0.35, 0.25], [0.2, 0.2, 0.6]])
    assert decide(three, 0.5).tolist() == [ABSTAIN, 2]


def _probs(mass: float, calcification: float) -> dict[str, np.ndarray]:
    """One item: given P(mass), P(calcification); every other field confidently its class 1."""
    out = {task: np.eye(len(NAMES[task]))[[1]] * 0.9 + 0.1 / len(NAMES[task]) for task in FIELDS}
    out["mass"] = np.array([[1 - mass, mass]])
    out["calcification"] = np.array([[1 - calcification, calcification]])
    return out


def _chain(mass: float, calcification: float, threshold: float = 0.6) -> dict[str, int]:
    return {task: int(a[0]) for task, a in run_chain(_probs(mass, calcification), threshold).items()}


def test_chain_gates_detail_fields_on_confident_findings():
    nothing = _chain(0.1, 0.2)
    assert nothing["mass"] == 0 and nothing["calcification"] == 0
    assert {nothing[t] for t in ("malignancy", "mass_shape", "mass_margin")} == {NOT_ASKED}
    assert nothing["architectural_distortion"] == 1 and nothing["birads"] == 1  # always asked
    mass = _chain(0.9, 0.1)
    assert mass["malignancy"] == 1 and mass["mass_shape"] == 1 and mass["mass_margin"] == 1
    calcification = _chain(0.1, 0.9)
    assert calcification["malignancy"] == 1 and calcification["mass_shape"] == NOT_ASKED
    uncertain = _chain(0.55, 0.1)  # P(mass) .55 < .6: uncertain, so no mass details and no malignancy
    assert uncertain["mass"] == ABSTAIN and uncertain["mass_shape"] == NOT_ASKED
    assert uncertain["malignancy"] == NOT_ASKED
    assert _chain(0.55, 0.1, threshold=0.0)["mass_shape"] == 1  # argmax (seed 001) follows the mass track
    with pytest.raises(ValueError, match="later in the chain"):
        run_chain(_probs(0.9, 0.9), 0.5, chain=CHAIN[::-1])


def test_sentences_follow_the_chain():
    nothing = " ".join(item_sentences(_chain(0.1, 0.2), NAMES))
    assert "No mass or suspicious calcification is seen." in nothing
    assert "malignan" not in nothing and "benign" not in nothing and "shape" not in nothing
    assert "Architectural distortion is present." in nothing and "Assessment: BI-RADS 2." in nothing
    mass = item_sentences(_chain(0.9, 0.1), NAMES)
    assert mass[:3] == ["A mass is seen.", "The mass shape is oval.", "The mass margins are obscured."]
    assert "No suspicious calcifications are seen." in mass
    assert "The findings are suggestive of malignancy." in mass
    calcification = " ".join(item_sentences(_chain(0.1, 0.9), NAMES))
    assert "Suspicious calcifications are seen." in calcification and "malignancy" in calcification
    assert "mass shape" not in calcification and "No mass is seen." in calcification
    uncertain = " ".join(item_sentences(_chain(0.55, 0.1), NAMES))
    assert "Whether a mass is present is uncertain." in uncertain and "shape" not in uncertain
    assert "malignan" not in uncertain
    abstained = " ".join(item_sentences(_chain(0.9, 0.1, threshold=0.95), NAMES))
    assert "Whether a mass is present is uncertain." in abstained
    assert "The BI-RADS assessment is uncertain." in abstained and "Assessment" not in abstained


def test_field_evaluation_on_a_hand_case():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    targets = np.array([0, 0, 1, 1, IGNORE_INDEX, 0])
    answers = decide(probs, 0.6)  # [0, 1, A, 1, 0, A]
    answers[3] = NOT_ASKED  # gated away
    scores = evaluate_field(probs, answers, targets, n_boot=50)
    assert scores["asked"] == 4 and scores["answered"] == 2  # items 0, 1, 2, 5 asked; 0 and 1 answered
    assert scores["coverage"].value == pytest.approx(0.5)
    assert scores["accuracy"].value == pytest.approx(0.5)  # item 0 right, item 1 wrong
    assert scores["argmax_accuracy"].value == pytest.approx(3 / 4)  # argmax 0, 1, 1, 0 vs 0, 0, 1, 0
    assert scores["majority"] == pytest.approx(3 / 4)
    curve = coverage_curve(probs, targets, [0.0, 0.6, 1.0]).set_index("threshold")
    assert curve.loc[0.0, "coverage"] == 1.0 and curve.loc[0.0, "accuracy"] == pytest.approx(4 / 5)
    assert curve.loc[0.6, "coverage"] == pytest.approx(3 / 5)  # .9, .8, .7 of the five known
    assert curve.loc[0.6, "accuracy"] == pytest.approx(2 / 3)
    assert curve.loc[1.0, "coverage"] == 0.0 and np.isnan(curve.loc[1.0, "accuracy"])


def test_config_errors():
    with pytest.raises(ValueError, match="threshold"):
        ReportConfig(threshold=1.5)
    with pytest.raises(ValueError, match="level"):
        ReportConfig(level="study")


def test_cli_on_tiny_data(tiny_masses, tiny_checkpoint, tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path_factory.getbasetemp() / "shared-cache"))
    out = tmp_path / "report_generation"
    common = ["--data", str(tiny_masses), "--checkpoint", str(tiny_checkpoint), "--split", "training",
              "--image-size", "128", "80", "--n-boot", "20", "--report-dir", str(out), "--no-progress"]
    run = main([*common, "--threshold", "0"])
    stem = out / "breast_training_t0"
    for suffix in ("_fields.md", "_fields.csv", "_fields.tex", "_structured.csv", "_structured.json",
                   "_exams.json", "_exams.md", "_coverage.png", "_coverage.pdf", "_coverage.csv", ".json"):
        assert stem.with_name(stem.name + suffix).is_file(), suffix
    fields = run.fields.set_index("field")
    assert fields.index.tolist() == list(FIELDS)
    assert fields.loc["birads", "prompts"] == "cxr_clip" and fields.loc["mass", "prompts"] == "mmg_clip"
    # threshold 0: every asked item is answered, and accuracy equals the argmax accuracy
    assert (fields["asked"] == fields["answered"]).all()
    assert (fields["accuracy (answered)"] == fields["argmax accuracy"]).all()
    structured = pd.read_csv(stem.with_name(stem.name + "_structured.csv"), keep_default_na=False)
    assert len(structured) == len(run.structured) and set(structured["side"]) <= {"L", "R"}
    assert not (structured[list(FIELDS)] == "uncertain").any().any()
    no_mass = structured["mass"] == "no mass"
    assert (structured.loc[no_mass, "mass_shape"] == "").all()
    exams = json.loads(stem.with_name(stem.name + "_exams.json").read_text())
    assert set(exams) == set(structured["study_id"].astype(str))
    assert all(s.startswith(("Right breast: ", "Left breast: ")) for sentences in exams.values() for s in sentences)
    strict = main([*common, "--threshold", "1"])
    assert (strict.fields["answered"] == 0).all()
    assert (strict.structured[["mass", "calcification", "birads"]] == "uncertain").all().all()
    assert (strict.structured["malignancy"] == "").all()  # no confident finding: never asked
    curves = pd.read_csv(out / "breast_training_t1_coverage.csv")
    assert set(curves["field"]) == set(FIELDS)

