"""Shared fixtures. Importing :mod:`models` first applies the runtime guard for every test."""

import models  # noqa: F401
