"""Reading torch files without running code from them, including checkpoints whose configs are OmegaConf objects.

Every file is read by torch's weights-only unpickler: tensors and plain containers only. Hydra-trained
models (Mammo-CLIP among them) often save their config with OmegaConf objects inside: a list in a
resolved config stays a ``ListConfig``, whose pickle names ``DictConfig``, ``ContainerMetadata``,
``AnyNode``, ``collections.defaultdict`` and ``typing.Any``. For those names the unpickler is given
inert stand-ins (:class:`OmegaConfRecord` keeps the pickled state and runs nothing, so omegaconf is
not needed), and :func:`plain` turns them back into the lists and dicts they held. Anything else
that a file pickles is refused, with a message that names it and says what to do.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from models.errors import InputError

CONVERT_COMMAND = "python -m models.convert_checkpoint --trust-code"

_OMEGACONF_CLASSES = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
    "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata", "omegaconf.base.UnionNode",
    *(f"omegaconf.nodes.{name}" for name in (
        "AnyNode", "BooleanNode", "BytesNode", "FloatNode", "IntegerNode", "StringNode", "ValueNode",
        "InterpolationResultNode")),
)
# Types that OmegaConf metadata names (a node's ref_type, a list's element_type ...): kept as names.
_TYPE_REFERENCES = ("typing.Any", *(f"builtins.{name}" for name in ("dict", "list", "tuple", "int", "float", "str",
                                                                     "bool", "bytes")))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class OmegaConfRecord:
    """Stand-in for an OmegaConf container, node or metadata object: holds the pickled state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


class TypeReference(OmegaConfRecord):
    """Stand-in for a type named in OmegaConf metadata (``typing.Any``, ``builtins.dict`` ...)."""


def _plain_dict(*args: Any, **kwargs: Any) -> dict:
    """Stand-in for ``collections.defaultdict`` (OmegaConf's resolver caches): a plain dict, which the
    pickle then fills with the same items; the default factory is dropped, never called."""
    return {}


def _stand_ins() -> list[tuple[Any, str]]:
    return [*((OmegaConfRecord, name) for name in _OMEGACONF_CLASSES),
            *((TypeReference, name) for name in _TYPE_REFERENCES),
            (_plain_dict, "collections.defaultdict")]


ACCEPTED_GLOBALS = frozenset(name for _, name in _stand_ins())


def plain(value: Any) -> Any:
    """``value`` with every OmegaConf stand-in replaced by the plain list, dict or value it held
    (metadata and parent links dropped; an unresolved interpolation stays its ``"${...}"`` string)."""
    if isinstance(value, TypeReference):
        return None
    if isinstance(value, OmegaConfRecord):
        state = value.state
        return plain(state["_val"] if "_val" in state else state.get("_content"))
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def blocking_globals(path: str | Path) -> list[str]:
    """Classes and functions that ``path`` pickles and this reader does not accept (read from the
    pickle's opcodes, nothing run); empty when the file is not a zip-format torch file."""
    try:
        found: Iterable[str] = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip-format torch file: torch.load's own error says so
        return []
    return sorted(set(found) - ACCEPTED_GLOBALS)


def _torch_reason(exc: Exception) -> str:
    """What torch's error says went wrong, without its advice or ANSI codes."""
    marker = "WeightsUnpickler error:"
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()] or [type(exc).__name__]
    for index, line in enumerate(lines):
        if marker in line:
            reason = line.split(marker, 1)[1].strip()
            return reason or (lines[index + 1] if index + 1 < len(lines) else line)
    return lines[0]


def refusal(path: str | Path) -> str | None:
    """The message for a torch file that pickles objects beyond the accepted ones, naming them (read
    from the pickle's opcodes, nothing run) and the options; None when it names none (then the file is
    damaged or not a torch file)."""
    blocking = blocking_globals(path)
    if not blocking:
        return None
    return (f"{path}: refused to read it with weights_only=True: it pickles {', '.join(blocking)}, beyond "
            "tensors, plain containers and the OmegaConf config objects this reader turns into plain ones; "
            "nothing from the file was run. Options: ask its authors for a plain state dict, or, only if you "
            f"trust where the file comes from, convert it once with `{CONVERT_COMMAND} --checkpoint {path} "
            "--plain PLAIN.pt` (this runs code stored in the file) and use PLAIN.pt")


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with OmegaConf configs read as plain containers.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file pickles other objects (the message names them and the options), or
            is not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_stand_ins()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, TypeError, AttributeError) as exc:
        message = refusal(path)
        raise CheckpointError(message or f"{path}: not a readable torch checkpoint ({_torch_reason(exc)})") from None
    return plain(payload)
