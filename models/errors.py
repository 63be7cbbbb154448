"""The base of every error about input a user can fix (a data file, a checkpoint).

Entry points report these in one line instead of a traceback (:func:`models.cli.run_main`); their
messages already say which file, row or key is wrong and what was expected.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input the user can fix; the message names where the problem is and what was expected."""
