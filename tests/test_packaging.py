"""setup.py / pyproject.toml: the package metadata."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_setup_py_reads_the_project_metadata():
    r = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ote-face", r.stderr
