"""One CLI style for every ``python -m`` entry point: flags generated from a config dataclass.

Each dataclass field becomes ``--field-name`` with its type, default and the ``help`` text from the
field's metadata; ``--config FILE.json`` supplies defaults that explicit flags override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> Any:
    """The argparse ``type`` for a field annotation (``X | None`` -> X)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0])
    return annotation


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls``; tuple and dict fields are read as JSON (dicts) or lists."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind = _scalar_type(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})".strip()
        origin = typing.get_origin(kind)
        if kind is bool:
            parser.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif origin is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(_flag(field.name), type=item, nargs="+", default=default, help=help_text)
        elif origin is dict or kind is dict:
            parser.add_argument(_flag(field.name), type=json.loads, default=default, help=help_text + " [JSON]")
        elif kind is Path:
            parser.add_argument(_flag(field.name), type=Path, default=default, help=help_text)
        else:
            parser.add_argument(_flag(field.name), type=kind, default=default, help=help_text)


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON file of defaults for any flag (explicit flags override it)")


def parse_with_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config FILE`` become defaults, explicit flags still win."""
    first, _ = parser.parse_known_args(argv)
    config_path = getattr(first, "config", None)
    if config_path is not None:
        try:
            values = json.loads(Path(config_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--config {config_path}: cannot read JSON ({exc})")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"--config {config_path}: unknown keys {unknown}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def build_dataclass(cls: type[T], namespace: argparse.Namespace) -> T:
    """Instantiate ``cls`` from the parsed flags that match its fields."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.init and hasattr(namespace, field.name):
            value = getattr(namespace, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)
