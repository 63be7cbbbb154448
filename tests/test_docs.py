"""The README and docs/ cannot drift: every relative link resolves (anchors included), every
``python -m`` command shown exists and its flags parse (argparse only, no work), and every row of the
README's results table is a row of the committed report it names."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
CODE_SPAN = re.compile(r"`([^`]+)`")
NOT_OURS = {"pytest", "venv", "pip"}


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = FENCE.sub("", path.read_text())
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


def shown_commands(page: Path) -> list[str]:
    """Every ``python -m X ...`` a page shows: each line of a bash block (continuations joined) and
    each inline code span."""
    text = page.read_text()
    commands = []
    for language, body in FENCE.findall(text):
        if language in ("bash", "sh", "console", ""):
            commands += [line for line in body.replace("\\\n", " ").splitlines() if "python -m " in line]
    commands += [span for span in CODE_SPAN.findall(FENCE.sub("", text)) if "python -m " in span]
    return [" ".join(command.split()) for command in commands]


def module_and_argv(command: str) -> tuple[str, list[str]] | None:
    """The module a command runs and its arguments, placeholders made concrete: ``[--flag X]`` kept as
    ``--flag X``, ``a|b`` as ``a``, ``...``, comments and what a shell runs before it dropped (None
    for tools that are not ours)."""
    command = command.split(" #", 1)[0].split("&&")[-1]
    module, _, rest = command.split("python -m ", 1)[1].partition(" ")
    if module == "torch.distributed.run":
        module, _, rest = rest.split("-m ", 1)[1].partition(" ")
    if module in NOT_OURS or not re.fullmatch(r"[a-z_][\w.]*", module):  # ``python -m X: error: ...`` quotes output
        return None
    rest = rest.replace("[", " ").replace("]", " ").replace("...", " ").replace("…", " ")
    if rest.count('"') % 2:  # the command closes a quoted `bash -c "..."`
        rest = rest.rstrip().removesuffix('"')
    argv = [word.split("|")[0] if word.startswith("-") or "|" in word else word for word in shlex.split(rest)]
    return module, argv


class Parsed(Exception):
    """Raised once argparse has accepted the arguments: the command would now start its work."""


def parse_only(module: str, argv: list[str], monkeypatch) -> None:
    """Run ``module``'s main on ``argv`` up to the end of argument parsing; a module named without
    arguments (as in the README's table of commands) must give its ``--help``."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    imported = importlib.import_module(module)
    if not hasattr(imported, "main"):
        imported = importlib.import_module(f"{module}.__main__")
    if not argv:
        with pytest.raises(SystemExit, match="^0$"):
            imported.main(["--help"])
        return
    with pytest.raises(Parsed):
        imported.main(argv)


COMMANDS = sorted({(page_id(page), command) for page in [ROOT / "README.md", *PAGES[2:]]
                   for command in shown_commands(page) if module_and_argv(command) is not None})


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}: {c[:60]}" for p, c in COMMANDS])
def test_every_shown_command_exists_and_its_flags_parse(page, command, monkeypatch, capsys):
    module, argv = module_and_argv(command)
    parse_only(module, argv, monkeypatch)


def test_the_commands_are_found():
    modules = {module_and_argv(command)[0] for _, command in COMMANDS}
    assert {"mammo_interp.factor", "models.pretrain", "analyses.reproduce", "models.data.synth"} <= modules


def test_a_wrong_flag_in_a_shown_command_would_fail(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse_only("mammo_interp.factor", ["--attribute", "mass", "--no-such-flag"], monkeypatch)
    assert "--no-such-flag" in capsys.readouterr().err


def results_table() -> tuple[pd.DataFrame, Path]:
    """The README's results table and the committed CSV its paragraph names."""
    section = (ROOT / "README.md").read_text().split("\n## What it finds", 1)[1].split("\n## ", 1)[0]
    source = re.search(r"\]\((reports/[^)]+\.csv)\)", section).group(1)
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    header, body = [cell.strip() for cell in rows[0]], rows[2:]
    return pd.DataFrame([[cell.strip() for cell in row] for row in body], columns=header), ROOT / source


def test_every_number_in_the_readme_results_table_is_the_committed_one():
    shown, source = results_table()
    committed = pd.read_csv(source, keep_default_na=False, dtype=str)
    assert set(shown.columns) <= set(committed.columns), (list(shown.columns), source)
    assert len(shown) >= 5
    for _, row in shown.iterrows():
        matches = committed[(committed[list(shown.columns)] == row.values).all(axis=1)]
        assert len(matches) == 1, f"README row {dict(row)} is not one row of {source.name}"


def test_the_readme_is_a_product_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert text.index("## Set-up") < text.index("## What it finds")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_issue_numbers_or_commit_hashes(page):
    text = page.read_text()
    assert not re.findall(r"\bissues? #?\d+", text, re.I)
    assert not re.findall(r"\bcommit [0-9a-f]{7,40}\b", text)


def test_no_issue_numbers_in_code_comments():
    found = [f"{path.relative_to(ROOT)}:{number}" for folder in ("models", "mammo_interp", "analyses", "tests")
             for path in (ROOT / folder).rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"#.*\bissues? #?\d+", line, re.I)]
    assert not found, found
