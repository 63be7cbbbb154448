"""One CLI style for every ``python -m`` entry point: flags generated from a config dataclass.

Each dataclass field becomes ``--field-name`` with its type, default and the ``help`` text from the
field's metadata (a string, or a function giving one when the parser is built); ``--config FILE.json`` supplies defaults that explicit flags override. Values the
config refuses, and bad input found later (:class:`models.errors.InputError`, missing or unreadable
files), end the program with one ``prog: error: ...`` line instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from models.allocator import keep_freed_memory
from models.device import check_machine
from models.data.reading import DataQuirkWarning
from models.errors import InputError
from models.io import recording_writes, writable_dir

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
    """Add one flag per field of ``cls``; tuple and dict fields are read as JSON (dicts) or lists.

    A field whose type is itself a dataclass (e.g. ``image: ImageEncoderConfig``) becomes a group of
    flags named after it (``--image-name``, ``--image-weights``...), or keeps its fields' own names
    when its metadata says ``flatten`` (options every command shares, e.g. ``--box-policy``); deeper
    dataclasses get groups of their own beside it (argparse deprecates groups inside groups).
    """
    _add_fields(parser, parser, cls, skip, prefix="")


def _add_fields(parser: argparse.ArgumentParser, target: argparse.ArgumentParser | argparse._ArgumentGroup,
                cls: type, skip: tuple[str, ...], prefix: str) -> None:
    """Flags of ``cls`` into ``target`` (the parser or one of its groups)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind = _scalar_type(hints[field.name])
        dest = prefix + field.name
        if dataclasses.is_dataclass(kind):
            group = parser.add_argument_group(f"{dest} ({kind.__name__})", field.metadata.get("help"))
            _add_fields(parser, group, kind, (), prefix=_nested_prefix(field, prefix))
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        if callable(help_text):  # read when the parser is built (e.g. the methods registered by then)
            help_text = help_text()
        if "default:" not in help_text:  # a help that explains its default already says it once
            help_text = f"{help_text} (default: {default})".strip()
        origin = typing.get_origin(kind)
        flags = [_flag(dest), *field.metadata.get("aliases", ())]  # e.g. --text-encoder, the name every command shares
        if kind is bool:
            target.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif origin is tuple:
            item = typing.get_args(kind)[0]
            target.add_argument(*flags, type=item, nargs="+", default=default, help=help_text)
        elif origin is dict or kind is dict:
            target.add_argument(*flags, type=json.loads, default=default, help=help_text + " [JSON]")
        else:
            target.add_argument(*flags, type=kind, default=default, help=help_text)


def _nested_prefix(field: dataclasses.Field, prefix: str) -> str:
    """Flag prefix of a nested dataclass field's own fields."""
    return prefix if field.metadata.get("flatten") else f"{prefix}{field.name}_"


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
        _set_config_defaults(parser, values, f"--config {config_path}")
    return parser.parse_args(argv)


def _set_config_defaults(parser: argparse.ArgumentParser, values: dict[str, Any], source: str) -> None:
    """Make a config file's (possibly nested) ``values`` the parser's defaults; unknown keys are a
    usage error naming ``source``."""
    known = {action.dest for action in parser._actions}
    values = _flatten(values, known)
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{source}: unknown keys {unknown}")
    parser.set_defaults(**values)


def _flatten(values: dict[str, Any], known: set[str], prefix: str = "") -> dict[str, Any]:
    """``{"image": {"name": x}}`` -> ``{"image_name": x}`` where that is a flag, so config files
    may nest the sections of nested dataclasses (dict-valued flags stay dicts)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        section = f"{prefix}{key}_"
        if isinstance(value, dict) and any(dest.startswith(section) for dest in known):
            flat.update(_flatten(value, known, section))
        else:
            flat[prefix + key] = value
    return flat


def build_dataclass(cls: type[T], namespace: argparse.Namespace, prefix: str = "") -> T:
    """Instantiate ``cls`` (and its nested dataclass fields) from the parsed flags."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        kind = _scalar_type(hints[field.name])
        dest = prefix + field.name
        if dataclasses.is_dataclass(kind):
            values[field.name] = build_dataclass(kind, namespace, prefix=_nested_prefix(field, prefix))
        elif hasattr(namespace, dest):
            value = getattr(namespace, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _config_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_file_argument(parser)
    add_dataclass_arguments(parser, cls)
    return parser


def _build_or_usage_error(cls: type[T], namespace: argparse.Namespace, parser: argparse.ArgumentParser) -> T:
    try:
        config = build_dataclass(cls, namespace)
        check_machine(config)  # e.g. --device cuda where torch sees no GPU
        return config
    except ValueError as exc:  # a value the config's own checks refuse: a usage error, not a traceback
        parser.error(str(exc))


def parse_config(cls: type[T], argv: list[str] | None, prog: str, description: str) -> T:
    """The whole CLI of an entry point: ``--config FILE`` plus one flag per field of ``cls``."""
    parser = _config_parser(cls, prog, description)
    return _build_or_usage_error(cls, parse_with_config_file(parser, argv), parser)


def config_from_values(cls: type[T], values: dict[str, Any], source: str) -> T:
    """``cls`` as its CLI builds it from a ``--config`` file holding ``values`` (nested sections
    allowed), with the same checks: an unknown key or a refused value exits with a usage error
    naming ``source``."""
    parser = _config_parser(cls, source, "")
    _set_config_defaults(parser, values, source)
    return _build_or_usage_error(cls, parser.parse_args([]), parser)


OUTPUT_FOLDERS = ("out", "report_dir", "ship_to")  # the one meaning of these flags: a folder written into


def parse_command(cls: type[T], argv: list[str] | None, prog: str, description: str) -> T:
    """The start of every command's ``main``: :func:`parse_config`, then :func:`check_output_folders`
    (its output folders made and checked, its run record arranged) before any data or model is read;
    a ``--threads`` above 0 becomes torch's number of CPU threads."""
    config = parse_config(cls, argv, prog, description)
    threads = getattr(config, "threads", 0)
    if threads < 0:
        raise SystemExit(f"{prog}: error: --threads: expected 0 (one per core) or more; got {threads}")
    check_output_folders(config, prog)
    if threads > 0:
        torch.set_num_threads(threads)
    return config


def check_output_folders(config: Any, prog: str) -> None:
    """Create every output folder a config names (``--out``, ``--report-dir``, ``--ship-to``) and
    check it can be written, before any data or model is read; else exit with one line naming the
    flag. Entry points call it right after parsing. ``--out`` and ``--report-dir`` then get this
    command's record (:mod:`models.run_record`: command line, config, commit, checkpoints): under
    :func:`run_main` once the command has finished (a command that fails wrote nothing to reproduce),
    called directly at once; shipped weights carry cards instead."""
    from models.run_record import write_run_record  # reads the package's cards; not needed to parse

    folders = [getattr(config, name) for name in ("out", "report_dir") if getattr(config, name, None) is not None]
    for name in OUTPUT_FOLDERS:
        path = getattr(config, name, None)
        if path is None:
            continue
        try:
            writable_dir(path, _flag(name))
        except OSError as exc:
            raise SystemExit(f"{prog}: error: {exc}") from None
    if _deferred_records is not None:
        _deferred_records.append((config, prog, folders))
    else:
        write_run_record(config, prog, folders)


_deferred_records: list[tuple[Any, str, list[str]]] | None = None  # run_main's, written when main returns


USER_ERRORS = (InputError, FileNotFoundError, PermissionError)


def run_command(command: list[str]) -> str | None:
    """Run ``python -m MODULE ARGS`` in a child process of this interpreter, its output captured: None
    when it succeeds, else one line naming its status, how to rerun it and its last error line."""
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"status {done.returncode} (rerun: {shlex.join(command)}): {last}"


def run_main(main: Callable[[], object]) -> None:
    """Run an entry point's ``main()`` and exit: with its return value if that is an int, else 0;
    with one ``python -m MODULE: error: ...`` line and status 1 on input the user can fix (and no run
    record: those are written only when ``main`` returns). Repaired
    real-data quirks (:class:`DataQuirkWarning`) print as one ``... : warning: ...`` line each; at the
    end one ``... : wrote FOLDER/: files`` line per folder written into goes to stderr. The process
    keeps freed memory for reuse (:mod:`models.allocator`)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    prog = f"python -m {spec.name.removesuffix('.__main__')}" if spec else sys.argv[0]
    keep_freed_memory()
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, DataQuirkWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                default(message, category, *args, **kwargs)

        warnings.showwarning = show
        global _deferred_records
        _deferred_records = []
        try:
            with recording_writes() as written:
                result = main()
                from models.run_record import write_run_record
                for record in _deferred_records:
                    write_run_record(*record)
        except USER_ERRORS as exc:
            raise SystemExit(f"{prog}: error: {exc}") from None
        finally:
            _deferred_records = None
    from models.run_record import written_summary

    for line in written_summary(written):
        print(f"{prog}: wrote {line}", file=sys.stderr)
    raise SystemExit(result if isinstance(result, int) else 0)
