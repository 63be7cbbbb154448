"""The README's code blocks, as the tests that run them read them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block after the README line that starts with ``heading``."""
    section = README.read_text().split(f"\n{heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)
