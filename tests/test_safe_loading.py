"""No code path can unpickle arbitrary objects: every ``torch.load`` in the packages passes
``weights_only=True``, and nothing calls ``pickle.load(s)`` or ``numpy.load(allow_pickle=True)``; the one
exception is the trusted conversion command, which refuses to run without ``--trust-code``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "mammo_interp", "analyses")
TRUSTED_CONVERSION = "models/convert_checkpoint.py"


def _keyword_constant(call: ast.Call, name: str) -> object:
    return next((getattr(k.value, "value", None) for k in call.keywords if k.arg == name), None)


def _unsafe_loads(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        call = f"{node.func.value.id}.{node.func.attr}"
        if call == "torch.load" and _keyword_constant(node, "weights_only") is not True:
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif call in ("pickle.load", "pickle.loads"):
            found.append(f"line {node.lineno}: {call}")
        elif call in ("np.load", "numpy.load") and _keyword_constant(node, "allow_pickle") is True:
            found.append(f"line {node.lineno}: {call}(allow_pickle=True)")
    return found


def test_the_checker_finds_unsafe_loads():
    assert _unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\n") == []
    assert len(_unsafe_loads("torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
                             "np.load(p, allow_pickle=True)\n")) == 4


def test_no_package_module_loads_unsafely():
    sources = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(sources) > 40
    found = {str(p.relative_to(ROOT)): _unsafe_loads(p.read_text()) for p in sources}
    assert len(found.pop(TRUSTED_CONVERSION)) == 1
    assert {path: problems for path, problems in found.items() if problems} == {}


def test_the_trusted_conversion_refuses_to_run_without_trust_code():
    from models.convert_checkpoint import ConvertConfig

    with pytest.raises(ValueError, match="--trust-code"):
        ConvertConfig(checkpoint="in.tar", plain="out.pt")
