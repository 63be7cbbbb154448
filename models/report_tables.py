"""Result tables a paper author can drop in: one frame written as CSV, GitHub markdown and LaTeX.

The three files show the same cell text (NaN as an empty cell), so numbers quoted from the markdown
match the paper's LaTeX table. Cells such as ``"0.812 (0.790–0.834)"`` (:meth:`Estimate.format`)
keep their en dash in CSV and markdown (UTF-8) and get ``--`` in LaTeX. The frame's index is not
written: put row names in a column (as :func:`ci_frame` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from models.io import atomic_write
from models.metrics import Estimate

EN_DASH = "\u2013"

# Characters LaTeX would read as markup (or, in the default OT1 font encoding, print as something
# else: | < >), and the en dash written as --. One rule for cells, headers and captions: pandas
# escapes cells and headers but offers no public escaper for a caption.
_LATEX_TRANSLATION = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "|": r"\textbar{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        EN_DASH: "--",
    }
)


def write_table(
    frame: pd.DataFrame,
    stem: str | Path,
    caption: str | None = None,
    label: str | None = None,
) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex`` atomically; return their paths.

    The LaTeX file is a booktabs ``tabular`` inside a centered ``table`` environment, with the
    caption and label when given; cells, headers and the caption are plain text, escaped for LaTeX
    (``\\ & % $ # _ { } ~ ^ | < >``; the label is written as given). The markdown file puts the
    caption above the table.
    """
    stem = Path(stem)
    text = _cell_text(frame)
    contents = {
        ".csv": frame.to_csv(index=False),
        ".md": _markdown(text, caption),
        ".tex": _latex(text, caption, label),
    }
    return [_write_text(stem.with_name(stem.name + suffix), c) for suffix, c in contents.items()]


def ci_frame(
    rows: Mapping[str, Mapping[str, Estimate]], row_label: str = "method", digits: int = 3
) -> pd.DataFrame:
    """One row per key of ``rows``, one column per metric, cells ``"value (low–high)"``.

    Metrics missing from a row give an empty cell; columns follow first appearance.
    """
    records = [
        {row_label: name, **{metric: e.format(digits) for metric, e in metrics.items()}}
        for name, metrics in rows.items()
    ]
    if not records:
        return pd.DataFrame(columns=[row_label])
    return pd.DataFrame(records).fillna("")


def ci_long_frame(
    rows: Mapping[str, Mapping[str, Estimate]], row_label: str = "method"
) -> pd.DataFrame:
    """The numbers behind :func:`ci_frame`, columns ``row_label, metric, value, low, high, n_boot``.

    One row per (row, metric) pair, for CSV consumers that want floats, not formatted text.
    """
    columns = [row_label, "metric", *(field.name for field in dataclasses.fields(Estimate))]
    records = [
        {row_label: name, "metric": metric, **dataclasses.asdict(estimate)}
        for name, metrics in rows.items()
        for metric, estimate in metrics.items()
    ]
    return pd.DataFrame(records, columns=columns)


def _write_text(path: Path, content: str) -> Path:
    """``content`` as UTF-8, atomically."""
    return atomic_write(path, lambda stream: stream.write(content.encode("utf-8")))


def _cell_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell and header as the text the CSV shows (NaN empty), index dropped."""
    text = frame.astype(object).where(frame.notna(), "").astype(str)
    text.columns = [str(column) for column in frame.columns]
    return text.reset_index(drop=True)


def _markdown(text: pd.DataFrame, caption: str | None) -> str:
    """GitHub pipe table, the caption (if any) as a paragraph above it."""
    lines = [caption, ""] if caption else []
    lines += [_markdown_row(text.columns), "|" + "---|" * text.shape[1]]
    lines += [_markdown_row(values) for values in text.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _markdown_row(cells) -> str:
    """``| a | b |`` with ``|`` escaped and line breaks flattened, so each cell stays one cell."""
    cleaned = (str(cell).replace("|", r"\|").replace("\n", " ") for cell in cells)
    return "| " + " | ".join(cleaned) + " |"


def _latex(text: pd.DataFrame, caption: str | None, label: str | None) -> str:
    """Booktabs table via pandas' Styler, with cells, headers and caption escaped."""
    escaped = text.map(_latex_text)
    escaped.columns = [_latex_text(column) for column in text.columns]
    return escaped.style.hide(axis="index").to_latex(
        hrules=True,
        position_float="centering",
        caption=_latex_text(caption) if caption else None,
        label=label,
    )


def _latex_text(text: str) -> str:
    """Plain text as LaTeX source: specials escaped, en dash as ``--``."""
    return text.translate(_LATEX_TRANSLATION)
