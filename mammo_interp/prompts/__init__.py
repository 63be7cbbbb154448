"""Zero-shot prompt sets as data: named sets of class prompts per task, read from JSON.

The packaged file (:data:`DEFAULT_PROMPT_FILE`) holds MMG-CLIP's Table 6 sentences (``mmg_clip``),
CXR-CLIP's bare labels (``cxr_clip``), several phrasings per class for ensembling
(``sentence_variants``) and side/view-aware sentences (``side_view``). Users extend or replace them
with their own file of the same layout::

    {"format": "mammo-interp/prompt-sets-1",
     "sets": {"NAME": {"description": "...", "source": "...",
                       "tasks": {"mass_shape": {"classes": {"round": ["Mass shape is {label}."], ...},
                                                "negatives": ["No {label}"]}}}}}

A task's ``classes`` must name exactly the classes of :func:`models.text.class_prompts` for that task
(any order; they are put in label-encoder order). Templates may use ``{label}`` (the class name),
``{side}`` ("left"/"right") and ``{view}`` ("craniocaudal"/"mediolateral oblique"); a placeholder
that the evaluation level does not fix (the view of a breast, the side of an exam) is filled with
every value, and the results are ensembled like several prompts. With ``negatives`` each class is
scored against its own negation (CXR-CLIP's multi-class protocol) instead of against the other
classes.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from models.data.errors import DataError
from models.data.schema import LATERALITIES, VIEWS
from models.errors import check_choice
from models.text import SIDE_WORDS, ZERO_SHOT_TASKS, class_prompts

FORMAT = "mammo-interp/prompt-sets-1"
DEFAULT_PROMPT_FILE = Path(__file__).with_name("prompt_sets.json")
PLACEHOLDERS = ("label", "side", "view")
VIEW_WORDS = {"CC": "craniocaudal", "MLO": "mediolateral oblique"}
_SET_KEYS = ("description", "source", "tasks")
_TASK_KEYS = ("classes", "negatives")


class PromptError(DataError):
    """A prompt file that cannot be used; the message names the file, the key and what was expected."""


@dataclass(frozen=True)
class TaskPrompts:
    """One task's prompt templates: ``classes`` in label-encoder order, optional ``negatives``."""

    task: str
    classes: tuple[tuple[str, tuple[str, ...]], ...]
    negatives: tuple[str, ...] = ()

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.classes)

    @property
    def contrastive(self) -> bool:
        """Whether each class is scored against its own negation (``negatives`` given)."""
        return bool(self.negatives)

    def fill(self, side: str | None = None, view: str | None = None
             ) -> tuple[list[list[str]], list[list[str]] | None]:
        """Prompts per class (and per class negation, or None) for an image of ``side`` (L/R) and
        ``view`` (CC/MLO); None fills every value. Lists are ``C`` long, one prompt list per class."""
        positive = [fill_templates(t, name, side, view) for name, t in self.classes]
        if not self.negatives:
            return positive, None
        return positive, [fill_templates(self.negatives, name, side, view) for name in self.class_names]


@dataclass(frozen=True)
class PromptSet:
    """A named family of prompts covering some of :data:`models.text.ZERO_SHOT_TASKS`."""

    name: str
    tasks: Mapping[str, TaskPrompts]
    description: str = ""
    source: str = ""


def fill_templates(templates: Sequence[str], label: str, side: str | None = None,
                   view: str | None = None) -> list[str]:
    """Every template with ``{label}``, ``{side}``, ``{view}`` filled, deduplicated in order.

    ``side`` is ``"L"``/``"R"`` and ``view`` ``"CC"``/``"MLO"``; None stands for every value, so a
    template naming ``{side}`` yields one sentence per side.

    Raises:
        ValueError: an unknown ``side`` or ``view`` code.
    """
    sides = _codes(side, LATERALITIES, "side")
    views = _codes(view, VIEWS, "view")
    filled = [
        template.format(label=label, side=SIDE_WORDS[s], view=VIEW_WORDS[v])
        for template in templates for s, v in product(sides, views)
    ]
    return list(dict.fromkeys(filled))


def _codes(code: str | None, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    if code is None:
        return valid
    check_choice(what, code, valid)
    return (code,)


def load_prompt_sets(path: str | Path | None = None) -> dict[str, PromptSet]:
    """The prompt sets of a JSON file (default: the packaged :data:`DEFAULT_PROMPT_FILE`), by name.

    Raises:
        PromptError: unreadable JSON, a wrong layout, an unknown task, classes that differ from the
            task's, an empty or non-string prompt, or a placeholder other than ``{label}``,
            ``{side}``, ``{view}``; the message names the file and the key.
    """
    path = Path(path) if path is not None else DEFAULT_PROMPT_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptError(path, f"cannot read JSON ({exc})", "a prompt-set file") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sets"), dict) or not raw["sets"]:
        raise PromptError(path, "no 'sets' object", '{"format": ..., "sets": {NAME: {...}}}')
    if raw.get("format", FORMAT) != FORMAT:
        raise PromptError(path, f"format {raw['format']!r}", repr(FORMAT))
    return {name: _prompt_set(path, name, spec) for name, spec in raw["sets"].items()}


def _prompt_set(path: Path, name: str, spec: Any) -> PromptSet:
    where = f"{path}: sets.{name}"
    _check_keys(where, spec, _SET_KEYS, required=("tasks",))
    if not isinstance(spec["tasks"], dict) or not spec["tasks"]:
        raise PromptError(where + ".tasks", "not a non-empty object", "{TASK: {...}}")
    tasks = {task: _task_prompts(f"{where}.tasks.{task}", task, entry)
             for task, entry in spec["tasks"].items()}
    return PromptSet(name, tasks, str(spec.get("description", "")), str(spec.get("source", "")))


def _task_prompts(where: str, task: str, entry: Any) -> TaskPrompts:
    if task not in ZERO_SHOT_TASKS:
        raise PromptError(where, f"unknown task {task!r}", f"one of {list(ZERO_SHOT_TASKS)}")
    _check_keys(where, entry, _TASK_KEYS, required=("classes",))
    classes = entry["classes"]
    expected = list(class_prompts(task))
    if not isinstance(classes, dict):
        raise PromptError(where + ".classes", "not an object", f"{{CLASS: [prompts]}} for {expected}")
    missing = [c for c in expected if c not in classes]
    unknown = [c for c in classes if c not in expected]
    if missing or unknown:
        raise PromptError(where + ".classes", f"missing classes {missing}, unknown classes {unknown}",
                          f"exactly {expected}")
    ordered = tuple((c, _templates(f"{where}.classes.{c}", classes[c])) for c in expected)
    negatives = _templates(where + ".negatives", entry["negatives"]) if "negatives" in entry else ()
    return TaskPrompts(task, ordered, negatives)


def _check_keys(where: str, spec: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    if not isinstance(spec, dict):
        raise PromptError(where, f"a {type(spec).__name__}", f"an object with keys {list(allowed)}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise PromptError(where, f"missing key(s) {missing}", f"keys {list(allowed)}")
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise PromptError(where, f"unknown key(s) {unknown}", f"keys {list(allowed)}")


def _templates(where: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of non-empty template strings using only :data:`PLACEHOLDERS`."""
    if not isinstance(value, list) or not value:
        raise PromptError(where, f"{value!r}", "a non-empty list of prompt strings")
    for i, template in enumerate(value):
        if not isinstance(template, str) or not template.strip():
            raise PromptError(f"{where}[{i}]", f"{template!r}", "a non-empty string")
        try:
            fields = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise PromptError(f"{where}[{i}]", f"{template!r}: {exc}",
                              "balanced braces (write {{ and }} for literal braces)") from exc
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in PLACEHOLDERS or spec or conversion:
                raise PromptError(f"{where}[{i}]", f"bad placeholder {{{name}}} in {template!r}",
                                  f"only {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    return tuple(value)


def prompt_set_for(sets: Mapping[str, PromptSet], task: str, name: str | None = None) -> PromptSet:
    """The set ``name`` (or, when None, the first set covering ``task``), checked to cover ``task``.

    Raises:
        KeyError: no such set, or it (or every set) lacks ``task``; the message lists candidates.
    """
    covering = [n for n, s in sets.items() if task in s.tasks]
    if name is None:
        if not covering:
            raise KeyError(f"no prompt set covers task {task!r}; sets: {list(sets)}")
        return sets[covering[0]]
    if name not in sets:
        raise KeyError(f"unknown prompt set {name!r}; available: {list(sets)}")
    if task not in sets[name].tasks:
        raise KeyError(f"prompt set {name!r} has no task {task!r}; sets with it: {covering}")
    return sets[name]
