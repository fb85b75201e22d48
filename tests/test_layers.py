"""The package layout is the architecture: imports inside ``ote_detection`` run downward only.

Layers, lowest first (README *Code layout*): utils < registry, config < models < data < engine < inference
< evaluation < export < omz_import < compression < apis. ``engine/`` (training) imports no OpenVINO and no
export code, so that a training machine needs neither.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "ote_detection"
LAYERS = ["utils", ("registry", "config"), "models", "data", "engine", "inference", "evaluation", "export",
          "omz_import", "compression", "apis"]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in ((layer,) if isinstance(layer, str) else layer)}


def _imports(path):
    """(line, top-level package inside ote_detection or None, absolute module name) of every import in a file."""
    rel = path.relative_to(ROOT).parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[:-1])[: len(rel) - node.level]
            parts = base + (node.module.split(".") if node.module else [])
            yield node.lineno, (parts[0] if parts else None), "ote_detection." + ".".join(parts)
        elif isinstance(node, ast.ImportFrom) and node.module:
            inner = node.module.split(".")
            yield node.lineno, (inner[1] if inner[0] == "ote_detection" and len(inner) > 1 else None), node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                inner = alias.name.split(".")
                yield node.lineno, (inner[1] if inner[0] == "ote_detection" and len(inner) > 1 else None), alias.name


def _package(path):
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0][:-3]


SOURCES = sorted(p for p in ROOT.rglob("*.py") if _package(p) in RANK)


def test_every_package_has_a_layer():
    packages = {_package(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(RANK), f"packages without a layer in this test: {sorted(packages - set(RANK))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downward(path):
    own = _package(path)
    upward = [f"line {line}: {module} ({target} is above {own})" for line, target, module in _imports(path)
              if target in RANK and target != own and RANK[target] > RANK[own]]
    assert not upward, f"{path.relative_to(ROOT)} imports upward: {upward}"


def test_engine_needs_neither_openvino_nor_export():
    offending = [f"{p.relative_to(ROOT)} line {line}: {module}"
                 for p in SOURCES if _package(p) == "engine"
                 for line, target, module in _imports(p)
                 if module.split(".")[0] in ("openvino", "nncf") or target in ("export", "omz_import", "inference")]
    assert not offending, offending
