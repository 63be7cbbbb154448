"""Prompt sets as data: the packaged file, custom files and their errors, placeholder filling, CLI."""

from __future__ import annotations

import json

import pytest

from mammo_interp.prompts import (
    DEFAULT_PROMPT_FILE, PromptError, TaskPrompts, fill_templates, load_prompt_sets, prompt_set_for,
)
from mammo_interp.prompts.__main__ import main as prompts_main
from models.data.schema import MASS_MARGINS, MASS_SHAPES
from models.text import class_prompts


def _write(tmp_path, sets, name="prompts.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"format": "mammo-interp/prompt-sets-1", "sets": sets}))
    return path


def _mass_set(**task):
    entry = {"classes": {"no mass": ["No mass."], "mass": ["A mass."]}, **task}
    return {"mine": {"tasks": {"mass": entry}}}


def test_packaged_sets_hold_the_papers_prompts():
    sets = load_prompt_sets()
    assert {"mmg_clip", "cxr_clip", "sentence_variants", "side_view"} <= set(sets)
    assert DEFAULT_PROMPT_FILE.is_file()
    mmg = sets["mmg_clip"].tasks
    # seed 001, Table 6, verbatim
    assert dict(mmg["mass"].classes) == {"no mass": ("No mass was observed.",),
                                         "mass": ("Findings revealed a mass.",)}
    assert dict(mmg["calcification"].classes)["calcification"] == ("Finding suggesting calcifications.",)
    assert dict(mmg["architectural_distortion"].classes)["no architectural distortion"] == (
        "Normal architecture is visible.",)
    assert mmg["malignancy"].fill()[0] == [["Findings suggesting benign."], ["Findings suggesting malignant."]]
    assert mmg["mass_shape"].fill()[0][0] == ["Mass shape is round."]
    assert mmg["mass_margin"].fill()[0][3] == ["Mass margins is ill-defined."]
    # classes in label-encoder order, every set and task
    for prompt_set in sets.values():
        for task, prompts in prompt_set.tasks.items():
            assert prompts.class_names == tuple(class_prompts(task)), (prompt_set.name, task)
    assert sets["side_view"].tasks["mass_shape"].class_names == MASS_SHAPES
    cxr = sets["cxr_clip"].tasks
    assert cxr["mass_margin"].class_names == MASS_MARGINS and cxr["mass_margin"].contrastive
    positive, negative = cxr["mass_shape"].fill()
    assert positive[1] == ["oval"] and negative[1] == ["No oval"]  # seed 001: "No oval" vs "oval"
    assert not cxr["mass"].contrastive and cxr["mass"].fill()[0] == [["No mass"], ["mass"]]


def test_custom_file_classes_are_put_in_encoder_order(tmp_path):
    shapes = {name: [f"{name} shape {{label}}"] for name in reversed(MASS_SHAPES)}
    sets = load_prompt_sets(_write(tmp_path, {"s": {"description": "d", "tasks": {"mass_shape": {"classes": shapes}}}}))
    prompts = sets["s"].tasks["mass_shape"]
    assert prompts.class_names == MASS_SHAPES
    assert prompts.fill()[0][0] == ["round shape round"]
    assert sets["s"].description == "d" and not prompts.contrastive


@pytest.mark.parametrize("sets, where, message", [
    (_mass_set(negatives=["No {lable}"]), "sets.mine.tasks.mass.negatives[0]", "bad placeholder {lable}"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": ["{}"], "mass": ["m"]}}}}},
     "classes.no mass[0]", "bad placeholder {}"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": ["{label:>9}"], "mass": ["m"]}}}}},
     "classes.no mass[0]", "bad placeholder"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": ["{label"], "mass": ["m"]}}}}},
     "classes.no mass[0]", "balanced braces"),
    ({"mine": {"tasks": {"mass": {"prompts": {}}}}}, "sets.mine.tasks.mass", r"missing key\(s\) \['classes'\]"),
    ({"mine": {"task": {}}}, "sets.mine", r"missing key\(s\) \['tasks'\]"),
    ({"mine": {"tasks": {"mass": {"classes": {"mass": ["m"]}}}}}, "classes",
     r"missing classes \['no mass'\]"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": ["n"], "mass": ["m"], "masses": ["x"]}}}}},
     "classes", r"unknown classes \['masses'\]"),
    ({"mine": {"tasks": {"tumour": {"classes": {}}}}}, "sets.mine.tasks.tumour", "unknown task"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": [], "mass": ["m"]}}}}},
     "classes.no mass", "non-empty list"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": "No mass.", "mass": ["m"]}}}}},
     "classes.no mass", "non-empty list"),
    ({"mine": {"tasks": {"mass": {"classes": {"no mass": [" "], "mass": ["m"]}}}}},
     "classes.no mass[0]", "non-empty string"),
    (_mass_set(extra=1), "sets.mine.tasks.mass", r"unknown key\(s\) \['extra'\]"),
])
def test_errors_name_file_key_and_expectation(tmp_path, sets, where, message):
    path = _write(tmp_path, sets)
    with pytest.raises(PromptError, match=message) as info:
        load_prompt_sets(path)
    assert str(path) in str(info.value) and where in str(info.value)
    assert "expected" in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(PromptError, match="cannot read JSON"):
        load_prompt_sets(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PromptError, match="cannot read JSON"):
        load_prompt_sets(bad)
    bad.write_text(json.dumps({"sets": {}}))
    with pytest.raises(PromptError, match="no 'sets' object"):
        load_prompt_sets(bad)
    bad.write_text(json.dumps({"format": "other-2", "sets": _mass_set()}))
    with pytest.raises(PromptError, match="format 'other-2'"):
        load_prompt_sets(bad)


def test_side_and_view_filling():
    template = ["A mass in the {side} breast, {view} view."]
    assert fill_templates(template, "mass", "L", "CC") == ["A mass in the left breast, craniocaudal view."]
    assert fill_templates(template, "mass", "R", None) == [
        "A mass in the right breast, craniocaudal view.",
        "A mass in the right breast, mediolateral oblique view.",
    ]
    assert len(fill_templates(template, "mass")) == 4
    # templates without the placeholder are not repeated per side/view
    assert fill_templates(["Mass shape is {label}.", "{label}"], "oval") == ["Mass shape is oval.", "oval"]
    with pytest.raises(ValueError, match="side: unknown 'X'; valid: L, R"):
        fill_templates(template, "mass", "X", "CC")
    with pytest.raises(ValueError, match="view: unknown 'ML'; valid:"):
        fill_templates(template, "mass", "L", "ML")
    prompts = TaskPrompts("mass_shape", tuple((s, ("A {label} mass, {side} {view}.",)) for s in MASS_SHAPES),
                          negatives=("No {label} mass in the {side} breast.",))
    positive, negative = prompts.fill("L", "MLO")
    assert positive[2] == ["A irregular mass, left mediolateral oblique."]
    assert negative[0] == ["No round mass in the left breast."]
    side_view = load_prompt_sets()["side_view"].tasks["mass_margin"]
    assert side_view.fill("R", "CC")[0][4] == ["A mass with spiculated margins in the right breast, craniocaudal view."]


def test_prompt_set_selection():
    sets = load_prompt_sets()
    assert prompt_set_for(sets, "mass").name == "mmg_clip"  # first set covering the task
    assert prompt_set_for(sets, "density").name == "cxr_clip"
    assert prompt_set_for(sets, "mass", "side_view").name == "side_view"
    with pytest.raises(KeyError, match="has no task 'density'"):
        prompt_set_for(sets, "density", "mmg_clip")
    with pytest.raises(KeyError, match="unknown prompt set 'nope'"):
        prompt_set_for(sets, "mass", "nope")


def test_cli_lists_prompts_of_a_custom_file(tmp_path, capsys):
    path = _write(tmp_path, {"views": {"tasks": {"mass": {"classes": {
        "no mass": ["No mass ({view})."], "mass": ["A mass in the {side} breast."]}}}}})
    table = prompts_main(["--task", "mass", "--file", str(path), "--side", "L", "--view", "MLO"])
    assert table["prompts"].tolist() == ["No mass (mediolateral oblique).", "A mass in the left breast."]
    out = capsys.readouterr().out
    assert "A mass in the left breast." in out and "views" in out
    table = prompts_main(["--task", "mass_shape", "--sets", "cxr_clip"])
    assert table["prompts"].iloc[0] == "round  vs  No round" and set(table["mode"]) == {"vs negation"}
    with pytest.raises(KeyError, match="unknown prompt sets"):
        prompts_main(["--task", "mass", "--sets", "nope"])
