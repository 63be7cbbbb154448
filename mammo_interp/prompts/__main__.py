"""Show a task's prompts in every set: ``python -m mammo_interp.prompts --task mass_shape``.

Prints one line per (set, class) with the filled prompts, so a user can check a custom prompt file
(``--file``) and see how side/view placeholders expand (``--side L --view CC``; unset = every value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import models  # noqa: F401 - runtime guard first
import pandas as pd

from mammo_interp.prompts import load_prompt_sets
from models.cli import parse_config, run_main
from models.errors import check_choice
from models.text import ZERO_SHOT_TASKS


@dataclass(frozen=True)
class ShowPromptsConfig:
    """Which prompts to show."""

    task: str = field(default="mass", metadata={"help": f"task: {ZERO_SHOT_TASKS}"})
    file: str | None = field(default=None, metadata={"help": "prompt-set JSON; default: the packaged sets"})
    sets: tuple[str, ...] = field(default=(), metadata={"help": "set names to show; default: all with the task"})
    side: str | None = field(default=None, metadata={"help": "fill {side} for L or R (default: both)"})
    view: str | None = field(default=None, metadata={"help": "fill {view} for CC or MLO (default: both)"})

    def __post_init__(self) -> None:
        check_choice("task", self.task, ZERO_SHOT_TASKS)


def prompt_table(config: ShowPromptsConfig) -> pd.DataFrame:
    """Columns ``set, mode, class, prompts`` (prompts joined by `` | ``; negations after ``vs``)."""
    sets = load_prompt_sets(config.file)
    unknown = [name for name in config.sets if name not in sets]
    if unknown:
        raise KeyError(f"unknown prompt sets {unknown}; available: {list(sets)}")
    records = []
    for name in config.sets or sets:
        prompts = sets[name].tasks.get(config.task)
        if prompts is None:
            continue
        positive, negative = prompts.fill(config.side, config.view)
        for k, class_name in enumerate(prompts.class_names):
            text = " | ".join(positive[k])
            if negative is not None:
                text += "  vs  " + " | ".join(negative[k])
            records.append({"set": name, "mode": "vs negation" if negative else "vs classes",
                            "class": class_name, "prompts": text})
    return pd.DataFrame(records, columns=["set", "mode", "class", "prompts"])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    config = parse_config(ShowPromptsConfig, argv, "python -m mammo_interp.prompts",
                          "List a zero-shot task's prompts in each prompt set, placeholders filled.")
    table = prompt_table(config)
    widths = {c: max([len(c), *table[c].map(len)]) for c in ("set", "mode", "class")}
    for row in [dict(zip(table.columns, table.columns)), *table.to_dict(orient="records")]:
        print("  ".join(f"{row[c]:<{w}}" for c, w in widths.items()) + "  " + row["prompts"])
    return table


if __name__ == "__main__":
    run_main(main)
