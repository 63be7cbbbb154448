"""The code blocks of the README and the docs, as the tests that run them read them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_block(heading: str, page: str = "README.md") -> str:
    """The first ```python block after the line of ``page`` (relative to the repository) that starts
    with ``heading``."""
    section = (ROOT / page).read_text().split(f"\n{heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)
