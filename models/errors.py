"""The base of every error about input a user can fix (a data file, a checkpoint).

Entry points report these in one line instead of a traceback (:func:`models.cli.run_main`); their
messages already say which file, row or key is wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable


class InputError(ValueError):
    """Input the user can fix; the message names where the problem is and what was expected."""


def check_choice(what: str, value: object, valid: Iterable[object]) -> None:
    """Refuse a name that is not one of ``valid`` in the one phrasing every command uses:
    ``what: unknown 'x'; valid: a, b, c`` (``value`` may be a list or tuple: its unknown items are named)."""
    valid = list(valid)
    several = isinstance(value, (list, tuple))
    unknown = [item for item in value if item not in valid] if several else [] if value in valid else [value]
    if unknown:
        raise ValueError(f"{what}: unknown {unknown if several else repr(value)}; valid: {', '.join(map(str, valid))}")
