"""The package layout is the architecture: imports inside ``ote_detection`` run downward only.

The rule is stated once, as import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``): the layer
list, highest first (apis > demo > compression > omz_import > export > evaluation > inference > engine > data >
models > registry, config > utils; every package must have a layer), and ``engine/`` (training) importing no
OpenVINO, NNCF or export code, so that a training machine needs neither. These tests run ``lint-imports`` on it; a broken contract
fails with every offending import (file, line and chain) in one message. docs/code_layout.md draws the layers.
"""

import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def lint_imports(root):
    """Run import-linter with ``root/pyproject.toml`` on the ``ote_detection`` under ``root``: (exit code, output)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = dict(os.environ, PYTHONPATH=str(root), COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_layer_contracts_are_kept():
    code, output = lint_imports(REPO)
    assert code == 0, output
    assert "2 kept, 0 broken" in output, output


def test_layer_contracts_catch_upward_imports_and_unlisted_packages(tmp_path):
    """The contracts fail on a copy of the package with an upward import (inside a function, as lazy imports are),
    OpenVINO imported by engine/, and a package without a layer; one message names all three."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    pkg = tmp_path / "ote_detection"
    shutil.copytree(REPO / "ote_detection", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(pkg / "models" / "anchors.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n    from ..apis import train  # noqa: F401\n")
    with open(pkg / "engine" / "optim.py", "a", encoding="utf-8") as f:
        f.write("\nimport openvino  # noqa: E402,F401\n")
    (pkg / "unlisted").mkdir()
    (pkg / "unlisted" / "__init__.py").write_text("")
    code, output = lint_imports(tmp_path)
    assert code != 0, output
    assert "0 kept, 2 broken" in output, output
    for expected in ("ote_detection.models.anchors -> ote_detection.apis.train", "ote_detection.unlisted",
                     "ote_detection.engine.optim -> openvino"):
        assert expected in output, output
